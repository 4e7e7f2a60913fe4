"""Goal reaching from recorded episodes (the DINO-WM / PLDM / LeWM protocol) in any Box-action env that renders.

    python -m benchmarks.plan_bench --config configs/plan_bench/pendulum.yaml [--out DIR] [dotted.key=value ...]
    (make plan-bench PLAN_ENV=pendulum; the default config is configs/plan_bench/shapes.yaml)

From nothing it makes what it needs, each step skipped when its output already exists in `out` (delete
the folder to start over): `record.episodes` episodes of `env` (random or a given policy, seeded, with
their reset seeds and states: `envs.recording`), a check that the env replays them exactly, the same
episodes in action blocks of `action_repeat` steps (`envs.goal_reaching.block_episodes`), the tokenizer
(`tokenizer.checkpoint` when given, else one trained on those episodes), a token cache, and the two
action-conditioned world models (DeltaWorld with its readout, the patch-level DINOWorld).

Then every method in `eval.methods` runs the same `eval.episodes` tasks (`envs.goal_reaching`: a start
state in a held-out episode, reached by replay, and the recorded frame `eval.goal_offset` steps later as
the goal image; success when the env's state comes within `eval.tolerance` of the goal's within
`eval.budget` env steps): CEM and MPPI in DeltaWorld with the token cost (no imagined frame decoded),
CEM in DeltaWorld with the feature cost (every imagined step decoded), CEM in DINOWorld, a random policy,
the zero action every step (what the env's own dynamics solve) and replaying the recorded actions (the
reachability ceiling). Every planner has the same settings
(`planner.*`). Writes <out>/report.json, <out>/report.md and one GIF per method of the first task
(<out>/gifs/METHOD.gif: the env's frame beside the goal).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.bench import SCALES, count_flops, planning_step_flops
from benchmarks.plan_config import METHODS, PlanBenchConfig, TrainSection
from envs import goal_reaching as gr
from envs.planners import MPCAgent, Planner
from envs.recording import frame_interval, record
from tokenizer.data.episodes import EPISODE_GLOB, episode_files
from tokenizer.model import TokenizerSource
from tokenizer.runtime.cli import Flag, parse_run_config, run_cli
from tokenizer.runtime.config import flatten, to_object
from tokenizer.runtime.errors import ConfigError, TrainingError
from tokenizer.runtime.files import atomic_write_text
from tokenizer.runtime.hub import is_repo_id
from worldmodel.loading import load_world_model
from worldmodel.pictures import save_animation, upscale_nearest

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


def run_python(args: list[str]) -> None:
    """Run `python ARGS` (a repo script or `-m module`) in the repo as its own process, as a user would; its output
    streams through."""
    result = subprocess.run([sys.executable, *args], cwd=REPO)
    if result.returncode != 0:
        raise TrainingError(f"python {' '.join(args)} failed with exit status {result.returncode}; its output is above")


def in_repo(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else REPO / path


class Phases:
    """Wall seconds of each preparation step this run took (steps skipped because their output existed are absent)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._name, self._started = "", 0.0

    def start(self, name: str) -> None:
        self.stop()
        self._name, self._started = name, time.perf_counter()

    def stop(self) -> None:
        if self._name:
            self.seconds[self._name] = time.perf_counter() - self._started
        self._name = ""


def tokenizer_overrides(source: TokenizerSource) -> list[str]:
    """The whole `tokenizer` section as dotted overrides of the world-model runs, so that a described weights file
    stays described (JSON spells null, booleans and lists as YAML reads them)."""
    flat = flatten(asdict(source), prefix="tokenizer")
    return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in flat.items()]


def prepare(cfg: PlanBenchConfig, out: Path, blocks: gr.ActionBlocks, phases: Phases) -> dict[str, Path]:
    """Recorded episodes, their action blocks, the tokenizer and both world models, each made only when missing."""
    recorded, episodes = out / "recorded", out / "episodes"
    if not any(recorded.glob(EPISODE_GLOB)):
        phases.start("record")
        rec = cfg.record
        print(f"recording {rec.episodes} {rec.policy}-policy episodes of {cfg.env} into {recorded}", flush=True)
        record(
            cfg.env,
            rec.episodes,
            recorded,
            rec.policy,
            cfg.seed,
            rec.max_steps,
            rec.frame_size,
            dict(cfg.env_kwargs),
            rec.state_key,
        )
    # Refuse a non-deterministic env before spending minutes on training for it.
    phases.start("replay_check")
    with gr.make_env(cfg.env, dict(cfg.env_kwargs)) as env:
        gr.check_replay(env, gr.load_episode(gr.held_out(episode_files(recorded))[0]))
    if not any(episodes.glob(EPISODE_GLOB)):
        phases.start("action_blocks")
        gr.block_episodes(recorded, episodes, blocks)
    size = f"data.frame_size={cfg.record.frame_size}"
    if cfg.tokenizer.checkpoint is not None:  # resolved by main: an existing path or a Hub id
        tokenizer = cfg.tokenizer.checkpoint
    else:
        tokenizer = out / "tokenizer" / "final"
        if not tokenizer.is_dir():
            section = cfg.tokenizer_train
            phases.start("tokenizer")
            print(f"training the tokenizer ({section.config}) on the episodes into {tokenizer.parent}", flush=True)
            own = [
                f"output_dir={tokenizer.parent}",
                "overwrite=true",
                "data.source=episodes",
                f"data.root={episodes}",
                size,
                f"seed={cfg.seed}",
            ]
            run_python([str(REPO / "train_tokenizer.py"), "--config", section.config, *own, *section.overrides])
    models = {"tokenizer": tokenizer}
    source = tokenizer_overrides(replace(cfg.tokenizer, checkpoint=str(tokenizer)))
    for name in ("deltaworld", "dinoworld"):
        section: TrainSection = getattr(cfg, name)
        models[name] = out / name / "final"
        if models[name].is_dir():
            continue
        # The block's actions, concatenated, are the model's action; the bench sets the size so configs need not.
        own = [
            f"output_dir={out / name}",
            "overwrite=true",
            "data.source=episodes",
            f"data.root={episodes}",
            size,
            *source,
            f"seed={cfg.seed}",
        ]
        dims = [f"model.actions.dim={blocks.dim}"]
        if name == "deltaworld":
            # DeltaWorld trains on the episodes' tokens, tokenized once (worldmodel.token_cache).
            tokens = out / "tokens"
            phases.start("token_cache")
            print(f"tokenizing episode clips once into {tokens}", flush=True)
            run_python(
                [
                    "-m",
                    "worldmodel.token_cache",
                    "--config",
                    section.config,
                    *own,
                    *section.overrides,
                    *dims,
                    f"cache.out={tokens}",
                    "cache.overwrite=true",
                ]
            )
            own += [
                "data.source=tokens",
                f"data.root={tokens}",
                "data.val_source=episodes",
                f"data.val_root={episodes}",
            ]
        phases.start(name)
        print(f"training {name} ({section.config}) on the episodes", flush=True)
        run_python([str(REPO / "train_world_model.py"), "--config", section.config, *own, *section.overrides, *dims])
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


def evaluate(
    name: str, controller, env, tasks: list[gr.Task], cfg: PlanBenchConfig, success: gr.Success, out: Path
) -> dict[str, Any]:
    results = []
    for index, task in enumerate(tasks):
        result = gr.run_task(
            env,
            task,
            controller,
            success,
            cfg.eval.budget,
            cfg.action_repeat,
            cfg.record.frame_size,
            cfg.planner.context,
            keep_frames=index == 0,
        )
        if index == 0:
            gif = out / "gifs" / f"{name}.gif"
            gif.parent.mkdir(parents=True, exist_ok=True)
            beside = [
                upscale_nearest(np.concatenate([frame, task.goal_frame], axis=1), GIF_UPSCALE)
                for frame in result.frames
            ]
            save_animation(gif, beside, fps=1.0 / frame_interval(env))
            result.frames = None
        results.append(result)
        verdict = "success" if result.success else "failure"
        print(
            f"  {name} task {index} ({task.name}): {verdict} after {result.steps} steps, distance "
            f"{result.final_distance:.3f}",
            flush=True,
        )
    row = gr.summarize(results)
    row["flops_per_planning_step"] = planning_flops(controller, env, tasks[0], cfg) if name in PLANNED else 0
    row["gif"] = str(out / "gifs" / f"{name}.gif")
    row["tasks"] = [
        {"task": r.task, "success": r.success, "steps": r.steps, "final_distance": r.final_distance} for r in results
    ]
    return row


def vitb_flops(cfg: PlanBenchConfig) -> dict:
    """The same search counted at ViT-B/512 on the meta device (`benchmarks.bench`); it scores every imagined
    step and takes 2-D actions, whatever `planner.cost_steps` and the env say, which the settings record."""
    flops = planning_step_flops(cfg.planner, SCALES["vitb_512"])
    flops["settings"].update({"cost_steps": "all", "action_dim": 2})
    return flops


def load_average() -> list[float]:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def table(methods: dict[str, dict]) -> str:
    lines = [
        "| method | success rate | 95 % interval (Wilson) | mean final distance | seconds / env step | GFLOP / "
        "planning step |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in methods.items():
        low, high = row["success_ci95"]
        lines.append(
            f"| {name} | {row['success_rate']:.2f} | {low:.2f}-{high:.2f} | {row['mean_final_distance']:.3f} | "
            f"{row['seconds_per_step']:.4f} | {row['flops_per_planning_step'] / 1e9:,.2f} |"
        )
    return "\n".join(lines)


def markdown(report: dict, methods: dict[str, dict]) -> str:
    protocol = report["protocol"]
    planner = report["planner"]
    lines = [
        f"# Goal reaching in {report['env']}",
        "",
        f"{protocol['episodes']} tasks from held-out recorded episodes: start state reached by replaying the "
        f"recorded actions from the recorded seed, goal = the recorded frame {protocol['goal_offset']} env steps "
        f"later; budget {protocol['budget']} env steps; success = the env's state within {protocol['tolerance']} of "
        f"the goal state (entries {protocol['state_dims'] or 'all'}, scaled by {protocol['state_scale'] or 1}, "
        f"angles {protocol['state_angles'] or 'none'}); actions in blocks of {report['action_repeat']} env steps. "
        f"Every planner: {planner['horizon']} blocks, {planner['candidates']} candidates x {planner['iterations']} "
        f"iterations ({planner['elites']} CEM elites), scored on "
        f"{'the last imagined step' if planner['cost_steps'] == 'last' else 'every imagined step'}, "
        f"{planner['steps_applied']} blocks applied before planning again, {planner['context']} context frames.",
        "",
        table(methods),
        "",
        f"Wall time {report['total_seconds'] / 60:.1f} min ({report['prepare_seconds'] / 60:.1f} preparing); "
        f"{report['machine']}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    flags = {"--out": Flag("out", "folder for report.json, report.md, the GIFs and the trained models")}
    cfg: PlanBenchConfig = to_object(
        parse_run_config(PlanBenchConfig, __doc__, DEFAULT_CONFIG, argv, flags, str(REPO / DEFAULT_CONFIG))
    )
    cfg.planner.validate()
    unknown = sorted(set(cfg.eval.methods) - set(METHODS))
    if unknown or not cfg.eval.methods:
        raise ConfigError(f"eval.methods {unknown or '[]'}: choose from {', '.join(METHODS)}")
    if cfg.record.frame_size < 8 or cfg.record.frame_size % 8:
        raise ConfigError(
            f"record.frame_size must be a positive multiple of 8 (the models' frame size), got {cfg.record.frame_size}"
        )
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
    # Refuses an env the protocol cannot run (Discrete actions, no rgb_array) before anything is made.
    with gr.make_env(cfg.env, dict(cfg.env_kwargs)) as probe:
        low, high, dt = probe.action_space.low, probe.action_space.high, frame_interval(probe)
    blocks = gr.ActionBlocks(low, high, cfg.action_repeat)
    phases = Phases()
    models = prepare(cfg, out, blocks, phases)
    prepared = time.perf_counter() - started
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    min_start = (cfg.planner.context - 1) * cfg.action_repeat
    tasks = gr.held_out_tasks(out / "recorded", cfg.eval.episodes, cfg.eval.goal_offset, min_start, cfg.eval.seed)
    success = gr.Success(
        cfg.eval.tolerance, list(cfg.eval.state_dims), list(cfg.eval.state_scale), list(cfg.eval.state_angles)
    )
    success.validate(tasks[0].goal_state.shape[0])
    # Long enough for the longest run: replay to the last start step, then the whole budget.
    env = gr.make_env(cfg.env, dict(cfg.env_kwargs), max_episode_steps=cfg.record.max_steps + cfg.eval.budget + 1)
    methods: dict[str, dict] = {}
    with env:
        for name in cfg.eval.methods:
            print(f"evaluating {name} on {len(tasks)} tasks", flush=True)
            phases.start(f"eval_{name}")
            controller = controller_for(name, cfg, models, blocks, dt * cfg.action_repeat, low, high)
            methods[name] = evaluate(name, controller, env, tasks, cfg, success, out)
    phases.stop()
    report: dict[str, Any] = {"env": cfg.env, **methods}
    if {"deltaworld_token_cem", "random", "dinoworld_cem"} <= set(methods):
        delta, rand, dino = methods["deltaworld_token_cem"], methods["random"], methods["dinoworld_cem"]
        report["deltaworld_token_success_over_random_points"] = 100 * (delta["success_rate"] - rand["success_rate"])
        report["deltaworld_token_success_over_dinoworld_points"] = 100 * (delta["success_rate"] - dino["success_rate"])
        report["dinoworld_over_deltaworld_token_seconds_per_step"] = dino["seconds_per_step"] / max(
            delta["seconds_per_step"], 1e-12
        )
    report.update(
        {
            "protocol": {
                "episodes": cfg.eval.episodes,
                "goal_offset": cfg.eval.goal_offset,
                "budget": cfg.eval.budget,
                "tolerance": cfg.eval.tolerance,
                "state_dims": list(cfg.eval.state_dims),
                "state_scale": list(cfg.eval.state_scale),
                "state_angles": list(cfg.eval.state_angles),
                "seed": cfg.eval.seed,
                "state_key": cfg.record.state_key if cfg.record.state_key is not None else "observation",
            },
            "action_repeat": cfg.action_repeat,
            "planner": {**vars(cfg.planner), "steps_applied": cfg.planner.steps_applied},
            "record": vars(cfg.record),
            "flops_per_planning_step_vitb_512": vitb_flops(cfg),
            "torch_threads": torch.get_num_threads(),
            "device": cfg.device,
            "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {platform.machine()}; "
            f"load average at start {', '.join(f'{x:.1f}' for x in load_before)}, "
            f"at end {', '.join(f'{x:.1f}' for x in load_average())}",
            "prepare_seconds": prepared,
            "phase_seconds": phases.seconds,
            "total_seconds": time.perf_counter() - started,
        }
    )
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "report.md", markdown(report, methods))
    print(table(methods))
    print(f"report in {out / 'report.json'} and {out / 'report.md'}, GIFs in {out / 'gifs'}")


if __name__ == "__main__":
    run_cli(main)
