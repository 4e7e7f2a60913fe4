"""What a recording's tasks ask of an agent, before any model is trained: record a plan-bench config's episodes
with its collection policy and count the candidate tasks that the `needs_acting` draw leaves out, and why.

    python -m benchmarks.task_draw --config configs/plan_bench/pendulum.yaml record.policy=random \
        record.episodes=20

The episodes go to a temporary folder, removed after. Prints one JSON line: how many candidates were looked
at to find `eval.episodes` tasks that need acting, and how many were left out because the start was already at
the goal, the zero action solved them, or the `eval.must_change` entries did not change. Every recorded episode
gives candidates here (no training set is kept apart).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from benchmarks.plan_bench import DEFAULT_CONFIG
from benchmarks.plan_config import PlanBenchConfig
from benchmarks.plan_prepare import parse_bench_config, record_episodes
from benchmarks.plan_tasks import check_config, check_env, needs_acting_draw, success_of
from envs import goal_reaching as gr
from tokenizer.data.episodes import episode_files
from tokenizer.runtime.cli import run_cli


def main(argv: list[str] | None = None) -> None:
    cfg: PlanBenchConfig = parse_bench_config(PlanBenchConfig, __doc__, DEFAULT_CONFIG, argv)
    check_config(cfg)
    success = success_of(cfg)
    facts = check_env(cfg, success)
    with tempfile.TemporaryDirectory() as scratch:
        record_episodes(cfg, Path(scratch))
        episodes = [gr.load_episode(p) for p in episode_files(scratch)]
        with gr.make_env(cfg.env, dict(cfg.env_kwargs), cfg.record.max_steps + cfg.eval.budget + 1) as env:
            draw = needs_acting_draw(cfg, env, episodes, success, facts)
    rec = cfg.record
    summary = {
        "env": cfg.env,
        "policy": rec.policy,
        "policy_kwargs": dict(rec.policy_kwargs),
        "episodes": rec.episodes,
        "needs_acting": len(draw.tasks),
        "considered": draw.considered,
        "left_out": draw.left_out,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    run_cli(main)
