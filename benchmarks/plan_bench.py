"""Goal reaching in Shapes-v0: CEM in DeltaWorld (token cost and feature cost) vs a random policy vs CEM in DINOWorld.

    python -m benchmarks.plan_bench --out runs/plan_bench [--config configs/plan_bench/shapes.yaml] [dotted.key=value ...]

From a fresh clone it trains what it needs, each step skipped when its output
already exists in `--out` (delete the folder to start over): the tiny tokenizer
(unless `tokenizer` names an existing folder), random-policy Shapes episodes,
then the two action-conditioned world models on those episodes. Each method
then drives the agent toward the place shown in `goal_frame()` for the same
`eval.episodes` seeded episodes with the same planner settings; an episode
succeeds when the agent comes within `success_radius` of the goal. DeltaWorld
plans twice: with the token cost (its readout's summaries: no imagined frame is
decoded) and with the feature cost (every imagined step decoded); an MPPI row
uses the token cost too. Writes <out>/report.json (with FLOPs per planning step
at ViT-B/512, counted on the meta device), prints a table, and saves one
token-cost episode as <out>/deltaworld_token_cem.gif (frame | goal).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from benchmarks.bench import SCALES, planning_step_flops
from benchmarks.plan_config import EvalSection, PlanBenchConfig, TrainSection
from envs.planners import MPCAgent, Planner
from envs.recording import record
from envs.shapes import ShapesEnv
from tokenizer.data.episodes import EPISODE_GLOB
from tokenizer.runtime.cli import Flag, parse_run_config, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.errors import TrainingError
from tokenizer.runtime.files import atomic_write_text
from worldmodel.loading import load_world_model
from worldmodel.pictures import save_animation, upscale_nearest

REPO = Path(__file__).resolve().parents[1]
SHAPES_ID = "deltaworld/Shapes-v0"


def run_python(args: list[str]) -> None:
    """Run `python ARGS` (a repo script or `-m module`) in the repo as its own process, as a user would; its output streams through."""
    result = subprocess.run([sys.executable, *args], cwd=REPO)
    if result.returncode != 0:
        raise TrainingError(f"python {' '.join(args)} failed with exit status {result.returncode}; its output is above")


def prepare(cfg: PlanBenchConfig, out: Path) -> dict[str, Path]:
    """Tokenizer, episodes and both world models, each made only when missing; -> their folders."""
    tokenizer = Path(cfg.tokenizer)
    if not tokenizer.is_absolute():
        tokenizer = REPO / tokenizer
    if not (tokenizer / "config.yaml").is_file():
        tokenizer = out / "tokenizer" / "final"
        if not tokenizer.is_dir():
            print(f"training the tiny tokenizer into {tokenizer.parent}", flush=True)
            run_python([str(REPO / "train_tokenizer.py"), "--config", "configs/tokenizer/tiny.yaml", f"output_dir={tokenizer.parent}", "overwrite=true"])
    episodes = out / "episodes"
    if not any(episodes.glob(EPISODE_GLOB)):
        print(f"recording {cfg.record.episodes} random-policy episodes into {episodes}", flush=True)
        record(SHAPES_ID, cfg.record.episodes, episodes, seed=cfg.seed, max_steps=cfg.record.max_steps)
    models = {}
    for name in ("deltaworld", "dinoworld"):
        section: TrainSection = getattr(cfg, name)
        models[name] = out / name / "final"
        if not models[name].is_dir():
            own = [f"output_dir={out / name}", "overwrite=true", f"data.root={episodes}", f"tokenizer.checkpoint={tokenizer}", f"seed={cfg.seed}"]
            if name == "deltaworld":
                # DeltaWorld trains on the episodes' tokens, tokenized once (worldmodel.token_cache).
                tokens = out / "tokens"
                print(f"tokenizing episode clips once into {tokens}", flush=True)
                run_python(["-m", "worldmodel.token_cache", "--config", section.config, *own, f"cache.out={tokens}", "cache.overwrite=true", *section.overrides])
                own += ["data.source=tokens", f"data.root={tokens}", "data.val_source=episodes", f"data.val_root={episodes}"]
            print(f"training {name} ({section.config}) on the episodes", flush=True)
            run_python([str(REPO / "train_world_model.py"), "--config", section.config, *own, *section.overrides])
    return models


Policy = Callable[[np.ndarray], np.ndarray]


def run_episode(env: ShapesEnv, seed: int, max_steps: int, reset_policy: Callable[[np.ndarray], None], act: Policy) -> dict:
    """One goal-reaching episode -> success, steps, seconds spent choosing actions, and the frames seen."""
    frame, info = env.reset(seed=seed)
    reset_policy(env.goal_frame())
    frames, thinking = [frame], 0.0
    for _ in range(max_steps):
        if info["success"]:
            break
        start = time.perf_counter()
        action = act(frame)
        thinking += time.perf_counter() - start
        frame, _, _, _, info = env.step(action)
        frames.append(frame)
    return {"success": bool(info["success"]), "steps": len(frames) - 1, "seconds": thinking, "frames": frames, "distance": info["distance"]}


def evaluate(name: str, env: ShapesEnv, cfg: EvalSection, reset_policy, act: Policy) -> tuple[dict, list[np.ndarray], np.ndarray]:
    results = []
    first_frames, first_goal = [], None
    for index in range(cfg.episodes):
        result = run_episode(env, cfg.seed + index, cfg.max_steps, reset_policy, act)
        if index == 0:
            first_frames, first_goal = result["frames"], env.goal_frame()
        results.append(result)
        print(f"  {name} episode {index}: {'success' if result['success'] else 'failure'} after {result['steps']} steps", flush=True)
    steps = sum(r["steps"] for r in results)
    summary = {
        "success_rate": sum(r["success"] for r in results) / len(results),
        "seconds_per_step": sum(r["seconds"] for r in results) / max(steps, 1),
        "mean_final_distance": float(np.mean([r["distance"] for r in results])),
        "episodes": len(results),
    }
    return summary, first_frames, first_goal


# name -> (world model, goal cost, planner kind); "random" has none.
METHODS = {
    "deltaworld_token_cem": ("deltaworld", "token", "cem"),
    "deltaworld_feature_cem": ("deltaworld", "features", "cem"),
    "deltaworld_token_mppi": ("deltaworld", "token", "mppi"),
    "random": None,
    "dinoworld_cem": ("dinoworld", "features", "cem"),
}
GIF_METHOD = "deltaworld_token_cem"


def mpc_policy(folder: Path, cfg: PlanBenchConfig, env: ShapesEnv, cost_kind: str, planner_kind: str) -> tuple[Callable, Policy]:
    world = load_world_model(folder)
    planner = Planner(replace(cfg.planner, kind=planner_kind), env.action_space.low, env.action_space.high)
    agent = MPCAgent(world, planner, dt=1.0 / env.config.fps, seed=cfg.seed, cost_kind=cost_kind)
    return agent.reset, agent.act


def random_policy(env: ShapesEnv, seed: int) -> tuple[Callable, Policy]:
    rng = np.random.default_rng(seed)
    return (lambda goal: None), (lambda frame: rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32))


def table(methods: dict[str, dict]) -> str:
    lines = ["| method | success rate | seconds / env step | mean final distance |", "| --- | --- | --- | --- |"]
    for name, row in methods.items():
        lines.append(f"| {name} | {row['success_rate']:.2f} | {row['seconds_per_step']:.4f} | {row['mean_final_distance']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    flags = {"--out": Flag("out", "folder for report.json, the GIF and the trained models")}
    default = "configs/plan_bench/shapes.yaml"
    cfg: PlanBenchConfig = to_object(parse_run_config(PlanBenchConfig, __doc__, default, argv, flags, str(REPO / default)))
    cfg.planner.validate()
    out = Path(cfg.out).resolve()
    started = time.perf_counter()
    models = prepare(cfg, out)
    prepared = time.perf_counter() - started
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    env = ShapesEnv()
    methods: dict[str, dict] = {}
    gif = None
    for name, method in METHODS.items():
        print(f"evaluating {name} on {cfg.eval.episodes} episodes", flush=True)
        policy = random_policy(env, cfg.seed) if method is None else mpc_policy(models[method[0]], cfg, env, *method[1:])
        methods[name], frames, goal = evaluate(name, env, cfg.eval, *policy)
        if name == GIF_METHOD:
            gif = out / f"{name}.gif"
            save_animation(gif, [upscale_nearest(np.concatenate([f, goal], axis=1), 4) for f in frames], fps=env.config.fps)
    delta, rand, dino = methods["deltaworld_token_cem"], methods["random"], methods["dinoworld_cem"]
    report = {
        **methods,
        "deltaworld_token_success_over_random_points": 100 * (delta["success_rate"] - rand["success_rate"]),
        "deltaworld_token_success_over_dinoworld_points": 100 * (delta["success_rate"] - dino["success_rate"]),
        "dinoworld_over_deltaworld_token_seconds_per_step": dino["seconds_per_step"] / max(delta["seconds_per_step"], 1e-12),
        "flops_per_planning_step_vitb_512": planning_step_flops(cfg.planner, SCALES["vitb_512"]),
        "planner": vars(cfg.planner),
        "eval": vars(cfg.eval),
        "torch_threads": torch.get_num_threads(),
        "prepare_seconds": prepared,
        "total_seconds": time.perf_counter() - started,
        "gif": str(gif),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    print(table(methods))
    flops = report["flops_per_planning_step_vitb_512"]
    print(
        f"DeltaWorld CEM with the token cost: {report['deltaworld_token_success_over_random_points']:+.0f} success points over random, "
        f"{report['deltaworld_token_success_over_dinoworld_points']:+.0f} over DINOWorld CEM, "
        f"{report['dinoworld_over_deltaworld_token_seconds_per_step']:.1f}x faster per env step than DINOWorld CEM; "
        f"{flops['dinoworld_over_deltaworld_token_search']:,.0f}x fewer search FLOPs per planning step at ViT-B/512; "
        f"report in {out / 'report.json'}, GIF in {gif}"
    )


if __name__ == "__main__":
    run_cli(main)
