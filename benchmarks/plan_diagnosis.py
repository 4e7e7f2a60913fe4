"""Why a planner misses a goal: the search, or the world model's cost. Reads a finished plan-bench run.

    python -m benchmarks.plan_diagnosis --config configs/plan_bench/pendulum.yaml --out runs/plan_bench_pendulum \
        ['eval.methods=[dinoworld_cem]']

The planner diagnosed is the first planning method of `eval.methods` (DeltaWorld's token-cost CEM by default).

For each task of the run's first task set (drawn again as the bench draws it), from the task's start the
world model scores, with the planner's own cost, three kinds of action sequence over the planner's horizon:
the plan one planning step makes, the recorded actions (which reach the goal in the env), and 64 uniform
random sequences. Then:
- `recorded_beats_plan`: the recorded actions cost less than the plan. The model knew a better sequence
  than the search found: a search error (more candidates or iterations can help).
- `recorded_beats_random`: the share of random sequences that cost more than the recorded actions, averaged
  over tasks. Near 0.5, the cost cannot tell the way to the goal from a random one: a model (or cost) error,
  which no search budget fixes.
Prints one JSON line with both, per task and averaged. Needs `planner.horizon` x `action_repeat` <=
`eval.goal_offset`, so that the recorded actions span the horizon.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.plan_bench import (
    DEFAULT_CONFIG,
    PLANNED,
    REPO,
    check_config,
    check_env,
    controller_for,
    draw_task_sets,
    success_of,
)
from benchmarks.plan_config import PlanBenchConfig
from envs import goal_reaching as gr
from envs.planners import sequence_costs
from envs.recording import headless_rendering
from tokenizer.runtime.cli import Flag, parse_run_config, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.errors import ConfigError

RANDOM_SEQUENCES = 64


@torch.no_grad()
def diagnose(controller: gr.PlanningController, env, task: gr.Task, cfg: PlanBenchConfig) -> dict:
    """Costs of the plan, the recorded actions and random sequences from one task's start."""
    agent, blocks = controller.agent, controller.blocks
    horizon, repeat = cfg.planner.horizon, cfg.action_repeat
    steps = gr.context_steps(task.start, cfg.planner.context, repeat)
    _, frames = gr.reach_start(env, task, cfg.record.frame_size, steps)
    controller.reset(task, [frames[s] for s in steps])
    dream = agent.frames.dream()
    plan = agent.planner.plan(agent.world, dream, agent.dt, agent.cost, agent.generator)
    recorded = task.episode.actions[task.start + 1 : task.start + 1 + horizon * repeat]
    recorded = torch.from_numpy(blocks.to_model(recorded.reshape(horizon, repeat, -1))).to(plan.device)
    shape = (RANDOM_SEQUENCES, *plan.shape)
    random = torch.rand(shape, generator=agent.generator, device=plan.device) * 2 - 1
    sequences = torch.cat((plan[None], recorded[None], random))
    costs = sequence_costs(
        agent.world,
        dream.repeat(len(sequences)),
        sequences,
        agent.dt,
        agent.cost,
        agent.generator,
        last_only=cfg.planner.cost_steps == "last",
    ).cpu()
    return {
        "task": task.name,
        "plan_cost": float(costs[0]),
        "recorded_cost": float(costs[1]),
        "random_cost_median": float(costs[2:].median()),
        "recorded_beats_plan": bool(costs[1] < costs[0]),
        "recorded_beats_random": float((costs[2:] > costs[1]).float().mean()),
    }


def main(argv: list[str] | None = None) -> None:
    headless_rendering()
    flags = {"--out": Flag("out", "the plan-bench run folder to read")}
    cfg: PlanBenchConfig = to_object(
        parse_run_config(PlanBenchConfig, __doc__, DEFAULT_CONFIG, argv, flags, str(REPO / DEFAULT_CONFIG))
    )
    check_config(cfg)
    method = next((m for m in cfg.eval.methods if m in PLANNED), None)
    if method is None:
        raise ConfigError(f"eval.methods names no planner to diagnose: one of {', '.join(PLANNED)}")
    if cfg.planner.horizon * cfg.action_repeat > cfg.eval.goal_offset:
        raise ConfigError("planner.horizon x action_repeat exceeds eval.goal_offset: the recorded actions are shorter")
    out = Path(cfg.out)
    models = {name: out / name / "final" for name in ("deltaworld", "dinoworld")}
    if not models[PLANNED[method][0]].is_dir():
        raise ConfigError(f"{models[PLANNED[method][0]]} does not exist: run the plan bench into {out} first")
    success = success_of(cfg)
    facts = check_env(cfg, success)
    blocks = gr.ActionBlocks(facts.low, facts.high, cfg.action_repeat)
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    env = gr.make_env(cfg.env, dict(cfg.env_kwargs), max_episode_steps=cfg.record.max_steps + cfg.eval.budget + 1)
    with env:
        draw = draw_task_sets(cfg, out / "recorded", env, success, facts)[cfg.eval.task_sets[0]]
        controller = controller_for(method, cfg, models, blocks, facts.dt * cfg.action_repeat, facts.low, facts.high)
        rows = [diagnose(controller, env, task, cfg) for task in draw.tasks]
    summary = {
        "env": cfg.env,
        "method": method,
        "task_set": cfg.eval.task_sets[0],
        "tasks": len(rows),
        "recorded_beats_plan": float(np.mean([r["recorded_beats_plan"] for r in rows])),
        "recorded_beats_random": float(np.mean([r["recorded_beats_random"] for r in rows])),
        "per_task": rows,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    run_cli(main)
