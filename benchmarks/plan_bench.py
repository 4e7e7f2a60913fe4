"""Goal reaching from recorded episodes (the DINO-WM / PLDM / LeWM protocol) in any Box-action env that renders.

    python -m benchmarks.plan_bench --config configs/plan_bench/pendulum.yaml [--out DIR] [dotted.key=value ...]
    (make plan-bench PLAN_ENV=pendulum; the default config is configs/plan_bench/shapes.yaml)

Everything the config says of the env is checked on it before anything is made (`check_env`: action space,
frames, the state's size against the success tests, the collection policy on a real observation). Then, from
nothing, it makes what it needs, each step skipped when its output already exists in `out` (delete the folder
to start over): `record.episodes` episodes of `env` (acted by `record.policy`, `envs.policies`; seeded, with
their reset seeds and states: `envs.recording`), a check that the env replays them exactly, the same episodes
in action blocks of `action_repeat` steps (`envs.goal_reaching.block_episodes`), the tokenizer
(`tokenizer.checkpoint` when given, else one trained on those episodes), a token cache, and the two
action-conditioned world models (DeltaWorld with its readout, the patch-level DINOWorld).

Tasks (`envs.goal_reaching`): a start state in a held-out episode, reached by replay, and the recorded frame
`eval.goal_offset` steps later as the goal image; success when the env's state passes every success test
(`eval.tolerance` over `eval.state_dims`, and each of `eval.more_tests`) within `eval.budget` env steps. Each
of `eval.task_sets` is drawn from the same held-out episodes: `all` (any start) and `needs_acting` (the start
not at the goal, not solved by the zero action within the budget, and the goal differing in the state entries
`eval.must_change` names), `eval.episodes` tasks each where the episodes allow.

Every method in `eval.methods` runs every task set: CEM and MPPI in DeltaWorld with the token cost (no
imagined frame decoded), CEM in DeltaWorld with the feature cost (every imagined step decoded), CEM in
DINOWorld, a random policy, the zero action every step (what the env's own dynamics solve) and replaying
the recorded actions (the reachability ceiling). Every planner has the same settings (`planner.*`). Then
`eval.budget_methods` run the first task set again at each search budget of `eval.budgets` that fits
`eval.budget_minutes` (`budget_sweep`): success against seconds per env step, drawn in <out>/budgets.png.
Writes <out>/report.json, <out>/report.md and per task set one GIF per method of its first solved task
(<out>/gifs/SET/METHOD.gif: the env's frame beside the goal).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from benchmarks.flops import SCALES, count_flops, planning_step_flops
from benchmarks.plan_config import BUDGET_METHODS, METHODS, TASK_SETS, PlanBenchConfig, TrainSection
from benchmarks.timing import Phases, load_average, machine_summary
from envs import goal_reaching as gr
from envs.planners import MPCAgent, Planner, PlannerConfig, budget_name, with_budget
from envs.policies import load_policy
from envs.recording import frame_interval, headless_rendering, record, state_vector
from tokenizer.data.episodes import EPISODE_GLOB, episode_files, held_out
from tokenizer.model import TokenizerSource
from tokenizer.run_config import TokenizerRunConfig
from tokenizer.runtime.cli import Flag, parse_run_config, run_cli
from tokenizer.runtime.config import load_config, to_object
from tokenizer.runtime.errors import ConfigError
from tokenizer.runtime.files import atomic_write_text
from tokenizer.runtime.hub import is_repo_id
from train_tokenizer import train_tokenizer
from train_world_model import train_world_model
from worldmodel.pictures import save_animation, upscale_nearest
from worldmodel.run_config import WorldModelRunConfig
from worldmodel.token_cache import make_token_cache
from worldmodel.world import load_world_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "configs/plan_bench/shapes.yaml"
GIF_UPSCALE = 4

# name -> (world model, goal cost, planner kind); the baselines have none.
PLANNED = {
    "deltaworld_token_cem": ("deltaworld", "token", "cem"),
    "deltaworld_token_mppi": ("deltaworld", "token", "mppi"),
    "deltaworld_feature_cem": ("deltaworld", "features", "cem"),
    "dinoworld_cem": ("dinoworld", "features", "cem"),
}


def in_repo(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else REPO / path


def run_config(
    schema: type, section: TrainSection, settings: dict[str, Any], fixed: dict[str, Any] | None = None
) -> DictConfig:
    """A training run's config: the section's file, then the bench's own `settings` (nested typed values: run
    folder, data, tokenizer, seed), then the section's dotted overrides, which may change any of them, then
    `fixed`, what the env dictates (the action size)."""
    return load_config(schema, in_repo(section.config), section.overrides, fixed, settings)


def record_episodes(cfg: PlanBenchConfig, folder: Path) -> None:
    """The `record` section's episodes of the env, into `folder`."""
    rec = cfg.record
    record(
        cfg.env,
        rec.episodes,
        folder,
        rec.policy,
        cfg.seed,
        rec.max_steps,
        rec.frame_size,
        dict(cfg.env_kwargs),
        rec.state_key,
        dict(rec.policy_kwargs),
    )


def prepare(cfg: PlanBenchConfig, out: Path, blocks: gr.ActionBlocks, phases: Phases) -> dict[str, Path]:
    """Recorded episodes, their action blocks, the tokenizer and both world models, each made only when missing."""
    recorded, episodes = out / "recorded", out / "episodes"
    if not any(recorded.glob(EPISODE_GLOB)):
        phases.start("record")
        print(
            f"recording {cfg.record.episodes} {cfg.record.policy}-policy episodes of {cfg.env} into {recorded}",
            flush=True,
        )
        record_episodes(cfg, recorded)
    # Refuse a non-deterministic env before spending minutes on training for it.
    phases.start("replay_check")
    with gr.make_env(cfg.env, dict(cfg.env_kwargs)) as env:
        gr.check_replay(env, gr.load_episode(gr.held_out(episode_files(recorded))[0]))
    if not any(episodes.glob(EPISODE_GLOB)):
        phases.start("action_blocks")
        gr.block_episodes(recorded, episodes, blocks)
    sections = {"deltaworld": cfg.deltaworld, "dinoworld": cfg.dinoworld}
    return train_models(
        out, episodes, cfg.record.frame_size, cfg.tokenizer, cfg.tokenizer_train, sections, blocks.dim, cfg.seed, phases
    )


def train_models(
    out: Path,
    episodes: Path,
    frame_size: int,
    tokenizer: TokenizerSource,
    tokenizer_train: TrainSection,
    sections: dict[str, TrainSection],
    action_dim: int,
    seed: int,
    phases: Phases,
) -> dict[str, Path]:
    """The tokenizer (`tokenizer.checkpoint`, or one trained with `tokenizer_train` on the `episodes` folder's frames
    into <out>/tokenizer) and each world model of `sections` ("deltaworld" from a token cache of the episodes,
    "dinoworld" from their frames), taking `action_dim`-D actions, into <out>/<name>; each made only when missing.
    Returns their final folders (or the tokenizer's checkpoint) by name, "tokenizer" among them."""
    frames = {"source": "episodes", "root": str(episodes), "frame_size": frame_size}
    if tokenizer.checkpoint is not None:  # resolved by the caller: an existing path or a Hub id
        trained = tokenizer.checkpoint
    else:
        trained = out / "tokenizer" / "final"
        if not trained.is_dir():
            phases.start("tokenizer")
            config = tokenizer_train.config
            print(f"training the tokenizer ({config}) on the episodes into {trained.parent}", flush=True)
            own = {"output_dir": str(trained.parent), "overwrite": True, "data": frames, "seed": seed}
            train_tokenizer(run_config(TokenizerRunConfig, tokenizer_train, own))
    models = {"tokenizer": trained}
    source = asdict(replace(tokenizer, checkpoint=str(trained)))
    for name, section in sections.items():
        models[name] = out / name / "final"
        if models[name].is_dir():
            continue
        own = {
            "output_dir": str(out / name),
            "overwrite": True,
            "data": dict(frames),
            "tokenizer": source,
            "seed": seed,
        }
        # The block's actions, concatenated, are the model's action, whatever the section's config says.
        actions = {"model": {"actions": {"dim": action_dim}}}
        if name == "deltaworld":
            # DeltaWorld trains on the episodes' tokens, tokenized once (worldmodel.token_cache).
            tokens = out / "tokens"
            phases.start("token_cache")
            print(f"tokenizing episode clips once into {tokens}", flush=True)
            cache = {**own, "cache": {"out": str(tokens), "overwrite": True}}
            make_token_cache(run_config(WorldModelRunConfig, section, cache, actions))
            own["data"] = {**frames, "source": "tokens", "root": str(tokens), "val_source": "episodes"}
            own["data"]["val_root"] = str(episodes)
        phases.start(name)
        print(f"training {name} ({section.config}) on the episodes", flush=True)
        train_world_model(run_config(WorldModelRunConfig, section, own, actions))
    phases.stop()
    return models


def controller_for(
    name: str,
    cfg: PlanBenchConfig,
    models: dict[str, Path],
    blocks: gr.ActionBlocks,
    dt: float,
    low: np.ndarray,
    high: np.ndarray,
):
    if name == "random":
        return gr.RandomController(low, high, cfg.seed)
    if name == "zero_action":
        return gr.ZeroController(low, high)
    if name == "replay":
        return gr.ReplayController()
    model, cost, kind = PLANNED[name]
    world = load_world_model(models[model])
    planner = Planner(replace(cfg.planner, kind=kind), -np.ones(blocks.dim), np.ones(blocks.dim))
    return gr.PlanningController(
        MPCAgent(world, planner, dt=dt, seed=cfg.seed, cost_kind=cost, device=cfg.device), blocks
    )


def planning_flops(controller: gr.PlanningController, env, task: gr.Task, cfg: PlanBenchConfig) -> int:
    """FLOPs of one planning step on the trained model, as the run takes it: the newest frame observed, then the
    search."""
    steps = gr.context_steps(task.start, cfg.planner.context, cfg.action_repeat)
    _, frames = gr.reach_start(env, task, cfg.record.frame_size, steps)
    controller.reset(task, [frames[s] for s in steps[:-1]])
    agent = controller.agent
    return count_flops(lambda: (agent.observe(frames[task.start]), agent.plan_steps(cfg.planner.steps_applied)))


def iteration_seconds(controller: gr.PlanningController, env, task: gr.Task, cfg: PlanBenchConfig) -> float:
    """Seconds of one search iteration of `controller`'s planner from the task's start, the best of two (the first
    call also pays for first-use setup)."""
    steps = gr.context_steps(task.start, cfg.planner.context, cfg.action_repeat)
    _, frames = gr.reach_start(env, task, cfg.record.frame_size, steps)
    controller.reset(task, [frames[s] for s in steps])
    agent = controller.agent
    agent.planner.config = replace(agent.planner.config, iterations=1)
    times = []
    for _ in range(2):
        started = time.perf_counter()
        agent.plan_steps(1)
        times.append(time.perf_counter() - started)
    return min(times)


def evaluate(
    name: str,
    controller,
    env,
    tasks: list[gr.Task],
    cfg: PlanBenchConfig,
    success: gr.Success,
    out: Path,
    task_set: str = "all",
    flops: bool = True,
) -> dict[str, Any]:
    """Run `controller` on every task -> the method's row (`gr.summarize`, FLOPs of one planning step, every task's
    outcome) and a GIF, <out>/gifs/<task_set>/<name>.gif, of its first solved task (the first task when none is)."""
    results, shown = [], None
    for index, task in enumerate(tasks):
        keep = shown is None or not shown[1].success
        result = gr.run_task(
            env,
            task,
            controller,
            success,
            cfg.eval.budget,
            cfg.action_repeat,
            cfg.record.frame_size,
            cfg.planner.context,
            keep_frames=keep,
        )
        if keep and (shown is None or result.success):
            shown = (index, result)
        results.append(result)
        verdict = "success" if result.success else "failure"
        print(
            f"  {name} task {index} ({task.name}): {verdict} after {result.steps} steps, distance "
            f"{result.final_distance:.3f}",
            flush=True,
        )
    index, result = shown
    gif = out / "gifs" / task_set / f"{name}.gif"
    gif.parent.mkdir(parents=True, exist_ok=True)
    goal = tasks[index].goal_frame
    beside = [upscale_nearest(np.concatenate([frame, goal], axis=1), GIF_UPSCALE) for frame in result.frames]
    save_animation(gif, beside, fps=1.0 / frame_interval(env))
    for r in results:
        r.frames = None
    row = gr.summarize(results)
    row["flops_per_planning_step"] = planning_flops(controller, env, tasks[0], cfg) if flops and name in PLANNED else 0
    row["gif"] = str(gif)
    row["gif_task"] = tasks[index].name
    row["tasks"] = [
        {"task": r.task, "success": r.success, "steps": r.steps, "final_distance": r.final_distance} for r in results
    ]
    return row


def vitb_flops(cfg: PlanBenchConfig) -> dict:
    """The same search counted at ViT-B/512 on the meta device (`benchmarks.flops`); it scores every imagined
    step and takes 2-D actions, whatever `planner.cost_steps` and the env say, which the settings record."""
    flops = planning_step_flops(cfg.planner, SCALES["vitb_512"])
    flops["settings"].update({"cost_steps": "all", "action_dim": 2})
    return flops


def table(methods: dict[str, dict]) -> str:
    lines = [
        "| method | success rate | 95 % interval (Wilson) | mean final distance (tolerances) | seconds / env step | "
        "GFLOP / planning step |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in methods.items():
        low, high = row["success_ci95"]
        lines.append(
            f"| {name} | {row['success_rate']:.2f} | {low:.2f}-{high:.2f} | {row['mean_final_distance']:.3f} | "
            f"{row['seconds_per_step']:.4f} | {row['flops_per_planning_step'] / 1e9:,.2f} |"
        )
    return "\n".join(lines)


def budget_table(rows: list[dict]) -> str:
    lines = [
        "| method | candidates x iterations / elites | success rate | 95 % interval | seconds / env step |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for row in rows:
        budget = f"{row['candidates']} x {row['iterations']} / {row['elites']}"
        if row.get("skipped"):
            lines.append(
                f"| {row['method']} | {budget} | not run: estimated {row['estimated_seconds'] / 60:.0f} min | - | - |"
            )
            continue
        low, high = row["success_ci95"]
        lines.append(
            f"| {row['method']} | {budget} | {row['success_rate']:.2f} | {low:.2f}-{high:.2f} | "
            f"{row['seconds_per_step']:.4f} |"
        )
    return "\n".join(lines)


def success_text(protocol: dict) -> str:
    parts = [
        f"within {t['tolerance']:g} over entries {t['dims'] or 'all'} (scaled by {t['scale'] or 1}, "
        f"angles {t['angles'] or 'none'})"
        for t in protocol["success"]
    ]
    return " and ".join(parts)


def markdown(report: dict, task_sets: dict[str, dict]) -> str:
    protocol = report["protocol"]
    planner = report["planner"]
    lines = [
        f"# Goal reaching in {report['env']}",
        "",
        f"Tasks from held-out recorded episodes ({report['record']['policy']} policy): start state reached by "
        f"replaying the recorded actions from the recorded seed, goal = the recorded frame {protocol['goal_offset']} "
        f"env steps later; budget {protocol['budget']} env steps; success = the env's state "
        f"{success_text(protocol)} of the goal state; distances in tolerances (1 = at the edge of the worst test). "
        f"Actions in blocks of {report['action_repeat']} env steps. "
        f"Every planner: {planner['horizon']} blocks, {planner['candidates']} candidates x {planner['iterations']} "
        f"iterations ({planner['elites']} CEM elites), scored on "
        f"{'the last imagined step' if planner['cost_steps'] == 'last' else 'every imagined step'}, "
        f"{planner['steps_applied']} blocks applied before planning again, {planner['context']} context frames.",
        "",
    ]
    for name, rows in task_sets.items():
        draw = rows["draw"]
        lines += [f"## Task set `{name}`: {rows['tasks']} tasks", ""]
        if name == "needs_acting":
            lines += [
                f"Of {draw['considered']} candidate tasks, left out: {draw['left_out']} (state entries that must "
                f"change: {protocol['must_change'] or 'none named'}).",
                "",
            ]
        lines += [table(rows["methods"]), ""]
    if report["budgets"]:
        lines += [
            f"## Search budgets on `{report['budget_task_set']}`",
            "",
            budget_table(report["budgets"]),
            "",
            f"![success against seconds per env step]({Path(report['budget_plot']).name})",
            "",
        ]
    lines += [
        f"Wall time {report['total_seconds'] / 60:.1f} min ({report['prepare_seconds'] / 60:.1f} preparing); "
        f"{report['machine']}.",
        "",
    ]
    return "\n".join(lines)


def success_of(cfg: PlanBenchConfig) -> gr.Success:
    tests = [cfg.eval, *cfg.eval.more_tests]
    return gr.Success(
        [gr.StateTest(t.tolerance, list(t.state_dims), list(t.state_scale), list(t.state_angles)) for t in tests]
    )


def check_config(cfg: PlanBenchConfig) -> None:
    """The checks that need neither the env nor any file."""
    cfg.planner.validate()
    unknown = sorted(set(cfg.eval.methods) - set(METHODS))
    if unknown or not cfg.eval.methods:
        raise ConfigError(f"eval.methods {unknown or '[]'}: choose from {', '.join(METHODS)}")
    unknown = sorted(set(cfg.eval.task_sets) - set(TASK_SETS))
    if unknown or not cfg.eval.task_sets:
        raise ConfigError(f"eval.task_sets {unknown or '[]'}: choose from {', '.join(TASK_SETS)}")
    unknown = sorted(set(cfg.eval.budget_methods) - set(BUDGET_METHODS))
    if unknown:
        raise ConfigError(f"eval.budget_methods {unknown}: choose from {', '.join(BUDGET_METHODS)}")
    for spec in cfg.eval.budgets:
        with_budget(cfg.planner, spec)
    # Before anything is recorded: the task draw refuses these too, but only after the whole build.
    for name in ("episodes", "goal_offset", "budget"):
        if getattr(cfg.eval, name) < 1:
            raise ConfigError(f"eval.{name} must be at least 1, got {getattr(cfg.eval, name)}")
    if not cfg.eval.budget_minutes >= 0:
        raise ConfigError(f"eval.budget_minutes must be 0 or more, got {cfg.eval.budget_minutes}")
    if cfg.record.frame_size < 8 or cfg.record.frame_size % 8:
        raise ConfigError(
            f"record.frame_size must be a positive multiple of 8 (the models' frame size), got {cfg.record.frame_size}"
        )


@dataclass
class EnvFacts:
    low: np.ndarray
    high: np.ndarray
    dt: float  # seconds between env steps
    state_size: int


def check_env(cfg: PlanBenchConfig, success: gr.Success) -> EnvFacts:
    """Make the env once and check everything the config says of it before anything is recorded: a Box action
    space and rgb_array frames (`gr.make_env`), a state to score (`record.state_key`), the success tests and
    `eval.must_change` against its size, and the collection policy."""
    with gr.make_env(cfg.env, dict(cfg.env_kwargs)) as probe:
        obs, info = probe.reset(seed=cfg.seed)
        state = state_vector(probe, obs, info, cfg.record.state_key)
        if state is None:
            raise ConfigError(
                f"{cfg.env}'s observation is not a state vector: name the info entry to score with record.state_key"
            )
        success.validate(state.shape[0])
        if cfg.eval.must_change:
            if any(not 0 <= d < state.shape[0] for d in cfg.eval.must_change):
                raise ConfigError(
                    f"eval.must_change {list(cfg.eval.must_change)} must index the state's {state.shape[0]} entries"
                )
            success.restricted(cfg.eval.must_change, state.shape[0])
        # One action on the reset observation: a policy that cannot read this env's observations fails here.
        policy = load_policy(cfg.record.policy, probe.action_space, dict(cfg.record.policy_kwargs))
        rng = np.random.default_rng(cfg.seed)
        if hasattr(policy, "reset"):
            policy.reset(rng)
        policy(obs, rng)
        space = probe.action_space
        return EnvFacts(space.low, space.high, frame_interval(probe), state.shape[0])


def min_start(cfg: PlanBenchConfig) -> int:
    """The first start step with a whole context of block frames before it."""
    return (cfg.planner.context - 1) * cfg.action_repeat


def needs_acting_draw(
    cfg: PlanBenchConfig, env, episodes: list[gr.RecordedEpisode], success: gr.Success, facts: EnvFacts
) -> gr.TaskDraw:
    """The `needs_acting` tasks of `episodes` as the config asks for them (`gr.needs_acting_tasks`)."""
    return gr.needs_acting_tasks(
        env,
        episodes,
        cfg.eval.episodes,
        cfg.eval.goal_offset,
        min_start(cfg),
        cfg.eval.seed,
        success,
        cfg.eval.budget,
        gr.ZeroController(facts.low, facts.high).action,
        list(cfg.eval.must_change),
    )


def draw_task_sets(
    cfg: PlanBenchConfig, recorded: Path, env, success: gr.Success, facts: EnvFacts
) -> dict[str, gr.TaskDraw]:
    """Each of `eval.task_sets` drawn from the same held-out episodes with `eval.seed`."""
    episodes = [gr.load_episode(p) for p in held_out(episode_files(recorded))]
    draws = {}
    for name in cfg.eval.task_sets:
        if name == "all":
            tasks = gr.select_tasks(episodes, cfg.eval.episodes, cfg.eval.goal_offset, min_start(cfg), cfg.eval.seed)
            draws[name] = gr.TaskDraw(tasks, len(tasks), {})
        else:
            print("drawing the tasks that need acting (the zero action run on each candidate)", flush=True)
            draws[name] = needs_acting_draw(cfg, env, episodes, success, facts)
            print(
                f"  {len(draws[name].tasks)} of {draws[name].considered} candidates need acting; left out: "
                f"{draws[name].left_out}",
                flush=True,
            )
    return draws


def budget_sweep(
    cfg: PlanBenchConfig,
    rows: dict[str, dict],
    run: Callable[[str, PlannerConfig], dict],
    iteration_seconds: Callable[[str, int], float],
) -> list[dict]:
    """Success against seconds per env step for each of `eval.budget_methods` at each of `eval.budgets`.

    The planner section's own budget is the row already measured. Other (method, budget) pairs run cheapest first
    while their estimated time keeps the sweep within `eval.budget_minutes`; the rest are reported as skipped with
    their estimate. The estimate scales the method's measured seconds at the planner's budget by the ratio of one
    search iteration's seconds at the two candidate counts (`iteration_seconds(method, candidates)`, timed: tiny
    models are not FLOP-bound, so a 5x larger batch costs less than 5x) times the ratio of iterations.
    `run(method, planner)` evaluates one pair -> its row."""
    base = cfg.planner
    specs = [budget_name(base), *cfg.eval.budgets]
    planners = {budget_name(p): p for p in (with_budget(base, spec) for spec in specs)}
    out, pending = [], []
    for method in cfg.eval.budget_methods:
        if method not in rows:
            continue
        for name, planner in planners.items():
            entry = {
                "method": method,
                "budget": name,
                "candidates": planner.candidates,
                "iterations": planner.iterations,
                "elites": planner.elites,
            }
            if name == budget_name(base):
                out.append(
                    {**entry, **{k: rows[method][k] for k in ("success_rate", "success_ci95", "seconds_per_step")}}
                )
                continue
            ratio = iteration_seconds(method, planner.candidates) / iteration_seconds(method, base.candidates)
            scale = ratio * planner.iterations / base.iterations
            estimate = rows[method]["seconds_per_step"] * scale * rows[method]["env_steps"]
            pending.append((estimate, entry, planner))
    spent = 0.0
    for estimate, entry, planner in sorted(pending, key=lambda item: item[0]):
        if spent + estimate > 60 * cfg.eval.budget_minutes:
            out.append({**entry, "skipped": True, "estimated_seconds": estimate})
            continue
        print(f"evaluating {entry['method']} at {entry['budget']} (estimated {estimate / 60:.1f} min)", flush=True)
        row = run(entry["method"], planner)
        spent += row["seconds_per_step"] * row["env_steps"]
        out.append({**entry, **{k: row[k] for k in ("success_rate", "success_ci95", "seconds_per_step")}})
    return out


def plot_budgets(rows: list[dict], path: Path, title: str) -> None:
    """Success (with 95 % intervals) against seconds per env step, log x, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        run = sorted(
            (r for r in rows if r["method"] == method and not r.get("skipped")), key=lambda r: r["seconds_per_step"]
        )
        x = [r["seconds_per_step"] for r in run]
        y = [r["success_rate"] for r in run]
        errors = [
            [r["success_rate"] - r["success_ci95"][0] for r in run],
            [r["success_ci95"][1] - r["success_rate"] for r in run],
        ]
        axes.errorbar(x, y, yerr=errors, marker="o", capsize=3, label=method)
        for r in run:
            axes.annotate(
                f"{r['candidates']}x{r['iterations']}",
                (r["seconds_per_step"], r["success_rate"]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    axes.set_xscale("log")
    axes.set_ylim(0, 1)
    axes.set_xlabel("seconds per env step (log)")
    axes.set_ylabel("success rate (95 % interval)")
    axes.set_title(title)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(figure)


def comparisons(methods: dict[str, dict]) -> dict[str, float]:
    if not {"deltaworld_token_cem", "random", "dinoworld_cem", "zero_action"} <= set(methods):
        return {}
    delta = methods["deltaworld_token_cem"]
    return {
        "deltaworld_token_success_over_random_points": 100
        * (delta["success_rate"] - methods["random"]["success_rate"]),
        "deltaworld_token_success_over_zero_action_points": 100
        * (delta["success_rate"] - methods["zero_action"]["success_rate"]),
        "deltaworld_token_success_over_dinoworld_points": 100
        * (delta["success_rate"] - methods["dinoworld_cem"]["success_rate"]),
        "dinoworld_over_deltaworld_token_seconds_per_step": methods["dinoworld_cem"]["seconds_per_step"]
        / max(delta["seconds_per_step"], 1e-12),
    }


def main(argv: list[str] | None = None) -> None:
    headless_rendering()
    flags = {"--out": Flag("out", "folder for report.json, report.md, the GIFs and the trained models")}
    cfg: PlanBenchConfig = to_object(
        parse_run_config(PlanBenchConfig, __doc__, DEFAULT_CONFIG, argv, flags, str(REPO / DEFAULT_CONFIG))
    )
    check_config(cfg)
    given = cfg.tokenizer.checkpoint
    if given is not None:
        if in_repo(given).exists():
            cfg.tokenizer.checkpoint = str(in_repo(given))
        elif not is_repo_id(given):
            raise ConfigError(
                f"tokenizer.checkpoint {given} does not exist; give a tokenizer folder, file or Hub id, or null to "
                "train one on the recorded episodes"
            )
    out = Path(cfg.out).resolve()
    started, load_before = time.perf_counter(), load_average()
    success = success_of(cfg)
    facts = check_env(cfg, success)
    low, high, dt = facts.low, facts.high, facts.dt
    blocks = gr.ActionBlocks(low, high, cfg.action_repeat)
    phases = Phases()
    models = prepare(cfg, out, blocks, phases)
    prepared = time.perf_counter() - started
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    # Long enough for the longest run: replay to the last start step, then the whole budget.
    env = gr.make_env(cfg.env, dict(cfg.env_kwargs), max_episode_steps=cfg.record.max_steps + cfg.eval.budget + 1)
    task_sets: dict[str, dict] = {}
    budgets: list[dict] = []
    with env:
        phases.start("draw_tasks")
        draws = draw_task_sets(cfg, out / "recorded", env, success, facts)
        for set_name, draw in draws.items():
            methods: dict[str, dict] = {}
            for name in cfg.eval.methods:
                print(f"evaluating {name} on {len(draw.tasks)} {set_name} tasks", flush=True)
                phases.start(f"eval_{set_name}_{name}")
                controller = controller_for(name, cfg, models, blocks, dt * cfg.action_repeat, low, high)
                methods[name] = evaluate(name, controller, env, draw.tasks, cfg, success, out, set_name)
            task_sets[set_name] = {
                "tasks": len(draw.tasks),
                "draw": {"considered": draw.considered, "left_out": draw.left_out},
                "methods": methods,
                **comparisons(methods),
            }
        first = cfg.eval.task_sets[0]

        def run_budget(method: str, planner: PlannerConfig) -> dict:
            phases.start(f"budget_{method}_{budget_name(planner)}")
            budgeted = replace(cfg, planner=planner)
            controller = controller_for(method, budgeted, models, blocks, dt * cfg.action_repeat, low, high)
            name = f"{method}_{planner.candidates}x{planner.iterations}"
            return evaluate(
                name, controller, env, draws[first].tasks, budgeted, success, out, f"budgets_{first}", False
            )

        timed: dict[tuple[str, int], float] = {}

        def time_iteration(method: str, candidates: int) -> float:
            if (method, candidates) not in timed:
                budgeted = replace(cfg, planner=replace(cfg.planner, candidates=candidates))
                controller = controller_for(method, budgeted, models, blocks, dt * cfg.action_repeat, low, high)
                timed[method, candidates] = iteration_seconds(controller, env, draws[first].tasks[0], budgeted)
            return timed[method, candidates]

        budgets = budget_sweep(cfg, task_sets[first]["methods"], run_budget, time_iteration)
    phases.stop()
    plot = out / "budgets.png"
    if budgets:
        plot_budgets(budgets, plot, f"{cfg.env}: {first} tasks ({task_sets[first]['tasks']})")
    report: dict[str, Any] = {"env": cfg.env}
    for set_name, rows in task_sets.items():
        # `all` keeps the top level, where its rows have always been; every other set is a section of the same rows.
        section = {**rows["methods"], **{k: v for k, v in rows.items() if k != "methods"}}
        if set_name == "all":
            report.update(section)
        else:
            report[set_name] = section
    report.update(
        {
            "budget_task_set": first,
            "budgets": budgets,
            "budget_plot": str(plot) if budgets else None,
            "protocol": {
                "episodes": cfg.eval.episodes,
                "goal_offset": cfg.eval.goal_offset,
                "budget": cfg.eval.budget,
                "success": [asdict(test) for test in success.tests],
                "must_change": list(cfg.eval.must_change),
                "seed": cfg.eval.seed,
                "state_key": cfg.record.state_key if cfg.record.state_key is not None else "observation",
            },
            "action_repeat": cfg.action_repeat,
            "planner": {**vars(cfg.planner), "steps_applied": cfg.planner.steps_applied},
            "record": {**vars(cfg.record), "policy_kwargs": dict(cfg.record.policy_kwargs)},
            "flops_per_planning_step_vitb_512": vitb_flops(cfg),
            "torch_threads": torch.get_num_threads(),
            "device": cfg.device,
            "machine": machine_summary(load_before),
            "prepare_seconds": prepared,
            "phase_seconds": phases.seconds,
            "total_seconds": time.perf_counter() - started,
        }
    )
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "report.md", markdown(report, task_sets))
    for set_name, rows in task_sets.items():
        print(f"{set_name} ({rows['tasks']} tasks)")
        print(table(rows["methods"]))
    if budgets:
        print(budget_table(budgets))
    print(f"report in {out / 'report.json'} and {out / 'report.md'}, GIFs in {out / 'gifs'}")


if __name__ == "__main__":
    run_cli(main)
