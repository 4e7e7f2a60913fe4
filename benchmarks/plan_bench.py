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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.flops import SCALES, count_flops, planning_step_flops
from benchmarks.plan_config import PlanBenchConfig
from benchmarks.plan_prepare import given_tokenizer, parse_bench_config, prepare
from benchmarks.plan_report import budget_table, comparisons, markdown, plot_budgets, table
from benchmarks.plan_tasks import check_config, check_env, draw_task_sets, success_of
from benchmarks.timing import Phases, load_average, machine_summary
from envs import goal_reaching as gr
from envs.planners import MPCAgent, Planner, PlannerConfig, budget_name, with_budget
from envs.recording import frame_interval
from tokenizer.runtime.cli import run_cli
from tokenizer.runtime.files import atomic_write_text
from worldmodel.pictures import save_animation, upscale_nearest
from worldmodel.world import load_world_model

DEFAULT_CONFIG = "configs/plan_bench/shapes.yaml"
GIF_UPSCALE = 4

# name -> (world model, goal cost, planner kind); the baselines have none.
PLANNED = {
    "deltaworld_token_cem": ("deltaworld", "token", "cem"),
    "deltaworld_token_mppi": ("deltaworld", "token", "mppi"),
    "deltaworld_feature_cem": ("deltaworld", "features", "cem"),
    "dinoworld_cem": ("dinoworld", "features", "cem"),
}


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


def main(argv: list[str] | None = None) -> None:
    cfg: PlanBenchConfig = parse_bench_config(
        PlanBenchConfig,
        __doc__,
        DEFAULT_CONFIG,
        argv,
        "folder for report.json, report.md, the GIFs and the trained models",
    )
    check_config(cfg)
    cfg.tokenizer.checkpoint = given_tokenizer(cfg.tokenizer.checkpoint, "the recorded episodes")
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
