"""Why a planner misses a goal: the search, the cost, the tokenizer or the predictor. Reads a finished plan-bench run.

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

Where a model error comes from, from the first 24 of those random sequences, each also played in the env from
the task's start. Each sequence gets three costs of its last frame, all with the planner's cost: of the real
frame (what a perfect world model would give), of the real frames' own tokens taken in by the world model in
place of imagined ones (`WorldModel.observe`: what the tokenizer and readout keep of the real future), and the
model's imagined one. Spearman rank correlations over the sequences, averaged over tasks:
- `cost_tracks_state`: real-frame cost against the real distance to the goal state: is the image goal usable?
- `tokens_track_env`: real tokens' cost against the real-frame cost (1 for a patch-level model, whose tokens are
  the frame's features): near 0, the tokenizer or readout loses what tells the sequences apart.
- `model_tracks_env`: imagined cost against the real-frame cost: near 0 with `tokens_track_env` high, the
  predictor does not carry the actions' effect.
and the success rate of the sequence each cost ranks best (`real_cost_picks`, `tokens_pick`, `model_picks`)
beside `any_reaches` (some sequence reaches the goal) and `random_reaches` (the mean sequence does).
Prints one JSON line, per task and averaged. Needs `planner.horizon` x `action_repeat` <=
`eval.goal_offset`, so that the recorded actions span the horizon.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.plan_bench import DEFAULT_CONFIG, PLANNED, controller_for
from benchmarks.plan_config import PlanBenchConfig
from benchmarks.plan_prepare import parse_bench_config
from benchmarks.plan_tasks import check_config, check_env, draw_task_sets, success_of
from envs import goal_reaching as gr
from envs.planners import sequence_costs
from envs.recording import state_vector
from envs.wrappers import frame_tensor
from tokenizer.runtime.cli import run_cli
from tokenizer.runtime.errors import ConfigError

RANDOM_SEQUENCES = 64
AVERAGED = (
    "cost_tracks_state",
    "tokens_track_env",
    "model_tracks_env",
    "real_cost_picks",
    "tokens_pick",
    "model_picks",
    "any_reaches",
    "random_reaches",
)
PLAYED_SEQUENCES = 24  # of the random ones, also played in the env (a replay from the seed each)


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (ties broken by order); NaN when either side is constant."""
    ranks_a, ranks_b = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


@torch.no_grad()
def played_costs(
    controller: gr.PlanningController,
    env,
    task: gr.Task,
    sequences: torch.Tensor,
    cfg: PlanBenchConfig,
    success: gr.Success,
) -> dict[str, np.ndarray]:
    """Play each model-action sequence (S, h, A) in the env from the task's start -> per sequence the planner's cost
    of the real last frame and of the real frames' tokens taken in by the world model (S,), the real distance to the
    goal state and whether it is reached (S,)."""
    agent, blocks = controller.agent, controller.blocks
    world, size = agent.world, cfg.record.frame_size
    steps = gr.context_steps(task.start, cfg.planner.context, cfg.action_repeat)
    real, through_tokens, distance, reached = [], [], [], []
    for sequence in blocks.to_env(sequences.cpu().numpy()):  # (h, repeat, A) env actions
        _, frames = gr.reach_start(env, task, size, steps)
        controller.reset(task, [frames[s] for s in steps])
        dream = agent.frames.dream()
        previous = dream.features
        for block in sequence:
            for action in block:
                obs, _, _, _, info = env.step(action)
            features = world.tokenizer.features(frame_tensor(gr.env_frame(env, size), device=previous.device))[:, 0]
            tokens = world.frame_tokens(features, previous, (size, size))
            dream = world.observe(dream, dream.time + agent.dt, tokens)
            previous = features
        cost = agent.cost
        through_tokens.append(float(cost(world, world.decoded(dream) if cost.needs_features else dream, tokens)[0]))
        real.append(float(cost.of_features(world, features, dream.grid)[0]))
        state = state_vector(env, obs, info, task.episode.state_key)
        distance.append(success.distance(state, task.goal_state))
        reached.append(success.reached(state, task.goal_state))
    return {
        "real": np.array(real),
        "tokens": np.array(through_tokens),
        "distance": np.array(distance),
        "reached": np.array(reached),
    }


@torch.no_grad()
def diagnose(controller: gr.PlanningController, env, task: gr.Task, cfg: PlanBenchConfig, success: gr.Success) -> dict:
    """Costs of the plan, the recorded actions and random sequences from one task's start, and of random sequences
    played in the env."""
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
    played = random[:PLAYED_SEQUENCES]
    imagined = (
        sequence_costs(
            agent.world, dream.repeat(len(played)), played, agent.dt, agent.cost, agent.generator, last_only=True
        )
        .cpu()
        .numpy()
    )
    truth = played_costs(controller, env, task, played, cfg, success)
    return {
        "task": task.name,
        "plan_cost": float(costs[0]),
        "recorded_cost": float(costs[1]),
        "random_cost_median": float(costs[2:].median()),
        "recorded_beats_plan": bool(costs[1] < costs[0]),
        "recorded_beats_random": float((costs[2:] > costs[1]).float().mean()),
        "cost_tracks_state": rank_correlation(truth["real"], truth["distance"]),
        "tokens_track_env": rank_correlation(truth["tokens"], truth["real"]),
        "model_tracks_env": rank_correlation(imagined, truth["real"]),
        "real_cost_picks": bool(truth["reached"][truth["real"].argmin()]),
        "tokens_pick": bool(truth["reached"][truth["tokens"].argmin()]),
        "model_picks": bool(truth["reached"][imagined.argmin()]),
        "any_reaches": bool(truth["reached"].any()),
        "random_reaches": float(truth["reached"].mean()),
    }


def main(argv: list[str] | None = None) -> None:
    cfg: PlanBenchConfig = parse_bench_config(
        PlanBenchConfig, __doc__, DEFAULT_CONFIG, argv, "the plan-bench run folder to read"
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
        rows = [diagnose(controller, env, task, cfg, success) for task in draw.tasks]
    summary = {
        "env": cfg.env,
        "method": method,
        "task_set": cfg.eval.task_sets[0],
        "tasks": len(rows),
        "recorded_beats_plan": float(np.mean([r["recorded_beats_plan"] for r in rows])),
        "recorded_beats_random": float(np.mean([r["recorded_beats_random"] for r in rows])),
        **{name: float(np.nanmean([float(r[name]) for r in rows])) for name in AVERAGED},
        "per_task": rows,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    run_cli(main)
