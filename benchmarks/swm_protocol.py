"""stable-worldmodel's own evaluation protocol, end to end, with DeltaWorld planning in its `World`.

    .venv-swm/bin/python -m benchmarks.swm_protocol --config configs/swm_protocol/tworoom.yaml [--out DIR] [k=v ...]
    (make swm-protocol SWM_ENV=tworoom, or pusht; it runs in .venv-swm: make swm-install)

From nothing, each step skipped when its output already exists in `out` (delete the folder to start over):
`collect.episodes` episodes of `env` recorded by the harness's `World.collect` (folder format, `collect.policy`
acting) into <out>/collected; the same episodes as ours, every `action_block`-th frame with the block of actions
between (`envs.stable_worldmodel.convert_dataset`) in <out>/episodes; the tokenizer, the token cache and DeltaWorld
(`benchmarks.plan_prepare.train_models`).

Tasks: `eval.tasks` (episode, start step) pairs drawn from the held-out episodes (every tenth, which training never
sees), each with its goal `eval.goal_offset` steps later in the same episode. `World.evaluate(dataset=...)` scores
every method on the same tasks within `eval.budget` env steps, success being the env's own `terminated` (TwoRoom:
the agent within 16 px of the goal position; PushT: agent and block positions within 20 px together, the block's
angle within pi/9): DeltaWorld's cost model (`envs.stable_worldmodel.DeltaWorldCost`) under their CEMSolver at each
of `eval.solvers` (their preset 300x30/30 is "peers"), in their `WorldModelPolicy`, their random policy and the zero
action. At each of `eval.perfect_model`'s budgets the same search and cost plan with the env itself in place of the
world model (`PerfectModelCost`): what the cost lets a search find when imagination is exact, so a shortfall reads
as the model's or the cost's. Writes <out>/report.json and <out>/report.md: each method's success rate in percent
with a 95 % Wilson interval, and its wall seconds; and how the world model ranks the recorded actions that reached
each goal among random sequences (`recorded_rank`), a bound on what a search in it can find.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from PIL import Image

from benchmarks.plan_config import TrainSection
from benchmarks.plan_prepare import given_tokenizer, parse_bench_config, train_models
from benchmarks.timing import Phases, load_average, machine_summary
from envs.goal_reaching import wilson_interval
from envs.goals import COST_KINDS, check_cost_blur, goal_cost_of_features
from envs.planners import BUDGETS, COST_STEPS, PlannerConfig, budget_name, with_budget
from envs.stable_worldmodel import SWM_STEP_SECONDS, BoxClip, DeltaWorldCost, convert_dataset, import_stable_worldmodel
from envs.wrappers import model_device
from tokenizer.data.episodes import EPISODE_GLOB, episode_files, held_out
from tokenizer.model import TokenizerSource
from tokenizer.runtime.cli import run_cli
from tokenizer.runtime.errors import ConfigError
from tokenizer.runtime.files import atomic_write_text
from worldmodel.world import load_world_model

DEFAULT_CONFIG = "configs/swm_protocol/tworoom.yaml"
BASELINES = ("random", "zero_action")
RANDOM_SEQUENCES = 63  # recorded_rank's random action sequences per task
PERFECT_GOALS_KEY = "perfect_model_goals"  # where PerfectModelCost keeps each env's goal cost during one solve
# What the harness's evaluation sets in each env from the dataset: the start state and the goal state it tests
# (both envs name them alike; an env without one of the methods is left as reset made it).
CALLABLES = [
    {"method": "_set_state", "args": {"state": {"value": "state", "in_dataset": True}}},
    {"method": "_set_goal_state", "args": {"goal_state": {"value": "goal_state", "in_dataset": True}}},
]


@dataclass
class CollectSection:
    episodes: int = 200  # every tenth is held out of training and gives the evaluation's tasks
    max_steps: int = 100  # env steps per episode at most (an env that terminates ends its episode sooner)
    num_envs: int = 4  # envs World.collect steps at once
    # "random" (the harness's RandomPolicy) or "package.module:Class", called with seed= and `policy_kwargs`:
    # stable_worldmodel.envs.pusht.expert_policy:WeakPolicy, stable_worldmodel.envs.two_room.expert_policy:ExpertPolicy
    policy: str = "random"
    policy_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlanSection:
    horizon: int = 5  # world-model steps (blocks of action_block env steps) each plan looks ahead
    receding_horizon: int = 5  # blocks executed before planning again
    cost: str = "token"  # token (the readout's summaries), features (decoded features) or auto
    cost_steps: str = "last"  # score a plan by its last imagined frame (DINO-WM's objective) or by all of them
    # Both maps smoothed by a Gaussian of this std in backbone patches before they are compared (envs.goals), 0: none
    cost_blur: float = 0.0
    batch_size: int = 10  # envs one CEM solve plans at once


@dataclass
class EvalSection:
    tasks: int = 50  # (episode, start) pairs, fewer when the held-out episodes hold fewer
    goal_offset: int = 25  # env steps from the start to the goal in the recording
    budget: int = 50  # env steps an agent has to reach the goal
    seed: int = 1000  # draws the tasks
    # CEM budgets, each "peers" (their 300x30, top 30) or "CANDIDATESxITERATIONS/ELITES"
    solvers: list[str] = field(default_factory=lambda: ["64x3/8", "peers"])
    # Policies scored on the same tasks: random (the harness's RandomPolicy), zero_action (what standing still solves)
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    # CEM budgets at which the same search and cost also plan with the env itself as the model (PerfectModelCost);
    # each plays every candidate in the env, so keep them small
    perfect_model: list[str] = field(default_factory=list)


@dataclass
class SwmProtocolConfig:
    env: str = "swm/TwoRoom-v1"  # a stable-worldmodel env id
    seed: int = 0
    out: str = "runs/swm_protocol_tworoom"
    device: str = "cpu"  # where DeltaWorld plans
    frame_size: int = 64  # World(image_shape=(frame_size, frame_size)): what is recorded and what the models see
    action_block: int = 5  # env steps per world-model frame (PlanConfig.action_block), the peers' frameskip 5
    tokenizer: TokenizerSource = field(default_factory=lambda: TokenizerSource(checkpoint=None))
    tokenizer_train: TrainSection = field(default_factory=lambda: TrainSection(config="configs/tokenizer/tiny.yaml"))
    collect: CollectSection = field(default_factory=CollectSection)
    deltaworld: TrainSection = field(default_factory=TrainSection)
    plan: PlanSection = field(default_factory=PlanSection)
    eval: EvalSection = field(default_factory=EvalSection)


def check_config(cfg: SwmProtocolConfig) -> None:
    """Refuse what would fail only after collecting and training."""
    for name, value in (
        ("collect.episodes", cfg.collect.episodes),
        ("collect.max_steps", cfg.collect.max_steps),
        ("collect.num_envs", cfg.collect.num_envs),
        ("action_block", cfg.action_block),
        ("plan.horizon", cfg.plan.horizon),
        ("plan.receding_horizon", cfg.plan.receding_horizon),
        ("plan.batch_size", cfg.plan.batch_size),
        ("eval.tasks", cfg.eval.tasks),
        ("eval.goal_offset", cfg.eval.goal_offset),
        ("eval.budget", cfg.eval.budget),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if cfg.plan.receding_horizon > cfg.plan.horizon:
        raise ConfigError(
            f"plan.receding_horizon ({cfg.plan.receding_horizon}) cannot exceed plan.horizon ({cfg.plan.horizon})"
        )
    if cfg.frame_size < 8 or cfg.frame_size % 8:
        raise ConfigError(f"frame_size must be a positive multiple of 8, got {cfg.frame_size}")
    if cfg.collect.policy != "random" and ":" not in cfg.collect.policy:
        raise ConfigError(f"collect.policy must be random or package.module:Class, got {cfg.collect.policy!r}")
    if cfg.plan.cost not in COST_KINDS or cfg.plan.cost_steps not in COST_STEPS:
        raise ConfigError(
            f"plan.cost must be one of {', '.join(COST_KINDS)} and plan.cost_steps one of {', '.join(COST_STEPS)}, got "
            f"{cfg.plan.cost!r} and {cfg.plan.cost_steps!r}"
        )
    check_cost_blur(cfg.plan.cost_blur, "plan.cost_blur")
    for spec in [*cfg.eval.solvers, *cfg.eval.perfect_model]:
        with_budget(PlannerConfig(), spec)  # refuses a malformed budget
    unknown = [name for name in cfg.eval.baselines if name not in BASELINES]
    if unknown:
        raise ConfigError(f"eval.baselines {unknown} are not among {', '.join(BASELINES)}")


def make_policy(swm: Any, cfg: CollectSection, seed: int) -> Any:
    """The collection policy `cfg.policy` names."""
    if cfg.policy == "random":
        return swm.policy.RandomPolicy(seed=seed)
    module, _, name = cfg.policy.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"collect.policy {cfg.policy}: {err}") from None
    return factory(seed=seed, **dict(cfg.policy_kwargs))


def collect(swm: Any, cfg: SwmProtocolConfig, folder: Path) -> None:
    """`cfg.collect.episodes` episodes recorded by the harness into `folder` (folder format), written beside and
    renamed when whole, so an interrupted collection is started again rather than trained on."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    world = swm.World(
        cfg.env,
        num_envs=cfg.collect.num_envs,
        image_shape=(cfg.frame_size, cfg.frame_size),
        max_episode_steps=cfg.collect.max_steps,
    )
    try:
        world.set_policy(make_policy(swm, cfg.collect, cfg.seed))
        world.collect(partial, episodes=cfg.collect.episodes, seed=cfg.seed, format="folder", progress=True)
    finally:
        world.close()
    partial.rename(folder)


def draw_tasks(lengths: list[int], held: list[int], cfg: EvalSection) -> tuple[list[int], list[int], int]:
    """(episodes, start steps, candidates): `cfg.tasks` distinct (held-out episode, start) pairs, seeded, whose goal
    `goal_offset` steps later is still in the episode; fewer when fewer qualify."""
    pairs = [(e, s) for e in held for s in range(lengths[e] - cfg.goal_offset)]
    if not pairs:
        raise ConfigError(
            f"no held-out episode is longer than eval.goal_offset ({cfg.goal_offset}) steps: the longest has "
            f"{max(lengths[e] for e in held)}; collect longer episodes (collect.max_steps) or lower the offset"
        )
    rng = np.random.default_rng(cfg.seed)
    chosen = rng.choice(len(pairs), size=min(cfg.tasks, len(pairs)), replace=False)
    return [pairs[i][0] for i in chosen], [pairs[i][1] for i in chosen], len(pairs)


def evaluate(swm: Any, cfg: SwmProtocolConfig, dataset: Any, tasks: tuple[list[int], list[int]], policy: Any) -> dict:
    """One method on every task through `World.evaluate(dataset=...)`, one env per task."""
    episodes, starts = tasks
    world = swm.World(
        cfg.env,
        num_envs=len(episodes),
        image_shape=(cfg.frame_size, cfg.frame_size),
        max_episode_steps=cfg.eval.budget + 1,
    )
    try:
        world.set_policy(policy)
        started = time.perf_counter()
        result = world.evaluate(
            dataset=dataset,
            episodes_idx=episodes,
            start_steps=starts,
            goal_offset=cfg.eval.goal_offset,
            eval_budget=cfg.eval.budget,
            callables=CALLABLES,
        )
        seconds = time.perf_counter() - started
    finally:
        world.close()
    successes = np.asarray(result["episode_successes"], dtype=bool)
    low, high = wilson_interval(int(successes.sum()), len(successes))
    return {
        "success_rate": float(result["success_rate"]),
        "success_ci95": [100 * low, 100 * high],
        "successes": successes.astype(int).tolist(),
        "seconds": seconds,
        # Envs that succeeded stand still for the rest of the budget and count here.
        "seconds_per_budget_step": seconds / (len(episodes) * cfg.eval.budget),
    }


def recorded_rank(
    cfg: SwmProtocolConfig, dataset: Any, world_model: Any, action_space: Any, tasks: tuple[list[int], list[int]]
) -> dict[str, float | None]:
    """Per cost kind (token, features): how the world model ranks the recorded actions that led from each task's
    start to its goal among RANDOM_SEQUENCES uniform random sequences, all imagined from the start frame and scored
    against the goal image: the mean share of random sequences it finds costlier. 1 when the model always prefers
    the way that worked, 0.5 when it cannot tell them apart; what a search can gain from the model is bounded by it.

    It needs the recorded actions to fill one plan (`eval.goal_offset` = `plan.horizon` x `action_block`); None
    otherwise."""
    steps = cfg.plan.horizon * cfg.action_block
    kinds = ("token", "features")
    if cfg.eval.goal_offset != steps:
        return dict.fromkeys(kinds)
    generator = torch.Generator().manual_seed(cfg.eval.seed)
    low, high = torch.as_tensor(action_space.low), torch.as_tensor(action_space.high)
    shares: dict[str, list[float]] = {kind: [] for kind in kinds}
    for episode_index, start in zip(*tasks):
        episode = dataset.load_episode(episode_index)
        frames = torch.as_tensor(np.asarray(episode["pixels"]))
        if frames.shape[-1] != 3:  # the folder and lance readers give channels first
            frames = frames.permute(0, 2, 3, 1)
        recorded = torch.as_tensor(np.asarray(episode["action"][start : start + steps]), dtype=torch.float32)
        random = low + (high - low) * torch.rand(RANDOM_SEQUENCES, steps, low.shape[0], generator=generator)
        candidates = torch.cat([recorded[None], random]).reshape(1, RANDOM_SEQUENCES + 1, cfg.plan.horizon, -1)
        views = {"pixels": frames[start][None, None, None], "goal": frames[start + steps][None, None, None]}
        for kind in kinds:
            costs = deltaworld_cost(cfg, world_model, action_space, kind).get_cost(dict(views), candidates)[0]
            shares[kind].append(float((costs[1:] > costs[0]).float().mean()))
    return {kind: float(np.mean(values)) for kind, values in shares.items()}


def zero_policy(swm: Any) -> Any:
    """The zero action every step, as a harness policy: the tasks an agent solves by standing still (or by what the
    env does alone)."""

    class ZeroPolicy(swm.policy.BasePolicy):
        def get_action(self, info_dict: dict, **kwargs: Any) -> np.ndarray:
            return np.zeros(self.env.action_space.shape, np.float32)

    return ZeroPolicy()


def deltaworld_cost(cfg: SwmProtocolConfig, world_model: Any, action_space: Any, kind: str) -> DeltaWorldCost:
    """DeltaWorld's cost model with the `kind` of goal cost and the config's plan settings."""
    dt = cfg.action_block * SWM_STEP_SECONDS
    return DeltaWorldCost(world_model, action_space, dt, kind, cfg.plan.cost_steps, cfg.seed, cfg.plan.cost_blur)


class PerfectModelCost:
    """A stable-worldmodel cost model that imagines nothing: every candidate is played in a copy of the env from the
    state the harness passes (`info_dict["state"]`, set with the env's `_set_state` as the protocol sets its start),
    and the frames the env renders after each block, resized to `frame_size` as the harness resizes them (PIL,
    bilinear), are scored against the goal image by the world model's goal cost on their true features (the token
    cost on their pooled summaries, which the readout learns to give). A planner with it has an exact world model:
    what it reaches is what the cost and the search allow."""

    def __init__(self, cfg: SwmProtocolConfig, world_model: Any, action_space: Any):
        self.cfg, self.world = cfg, world_model
        self.low, self.high = np.asarray(action_space.low), np.asarray(action_space.high)
        self.env = gymnasium.make(cfg.env).unwrapped
        self.env.reset(seed=cfg.seed)

    def frames(self, state: np.ndarray, plan: np.ndarray) -> torch.Tensor:
        """One candidate (horizon, action_block * A) played from `state` -> the frames the cost scores
        (scored blocks, 3, frame_size, frame_size) uint8: after every block, or after the last alone
        (`plan.cost_steps`; rendering is most of the time this takes)."""
        self.env._set_state(state)
        size, frames = (self.cfg.frame_size, self.cfg.frame_size), []
        blocks = plan.reshape(plan.shape[0], self.cfg.action_block, -1)
        for index, block in enumerate(blocks):
            for action in np.clip(block, self.low, self.high):
                self.env.step(action)
            if self.cfg.plan.cost_steps == "all" or index == len(blocks) - 1:
                frames.append(np.asarray(Image.fromarray(self.env.render()).resize(size, Image.BILINEAR)))
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)

    def goal_cost(self, goal: Any) -> tuple[Any, tuple[int, int]]:
        """One env's goal image (1, 1, H, W, 3) uint8 -> its step cost and patch grid."""
        goal = torch.as_tensor(np.asarray(goal)).permute(0, 1, 4, 2, 3).to(model_device(self.world))
        grid = self.world.tokenizer.grid(goal)
        features = self.world.tokenizer.features(goal)[0, 0]
        return goal_cost_of_features(self.world, features, grid, self.cfg.plan.cost, self.cfg.plan.cost_blur), grid

    @torch.no_grad()
    def get_cost(self, info_dict: dict, action_candidates: torch.Tensor) -> torch.Tensor:
        """Candidates (B, S, horizon, action_block * A) in env units -> costs (B, S), lower is better."""
        tokenizer, device = self.world.tokenizer, model_device(self.world)
        if PERFECT_GOALS_KEY not in info_dict:  # once per solve, as DeltaWorldCost takes in its goal
            info_dict[PERFECT_GOALS_KEY] = [self.goal_cost(goal[:1, -1:]) for goal in info_dict["goal"]]
        costs = torch.empty(action_candidates.shape[:2], device=device)
        for env_index, plans in enumerate(action_candidates.cpu().numpy()):
            step_cost, grid = info_dict[PERFECT_GOALS_KEY][env_index]
            state = np.asarray(info_dict["state"][env_index, 0, -1])
            # (S, scored blocks, 3, h, w)
            frames = torch.stack([self.frames(state, candidate) for candidate in plans]).to(device)
            features = tokenizer.features(frames.flatten(0, 1)[:, None])[:, 0]
            costs[env_index] = step_cost.of_features(self.world, features, grid).view(len(plans), -1).mean(1)
        return costs.to(action_candidates.device)


def cem_policy(swm: Any, cfg: SwmProtocolConfig, cost: Any, action_space: Any, spec: str) -> Any:
    """A cost model under their CEMSolver at budget `spec`, in their WorldModelPolicy."""
    budget = with_budget(PlannerConfig(), spec)
    solver = swm.solver.CEMSolver(
        cost,
        batch_size=cfg.plan.batch_size,
        num_samples=budget.candidates,
        n_steps=budget.iterations,
        topk=budget.elites,
        device=cfg.device,
        seed=cfg.seed,
    )
    config = swm.PlanConfig(
        horizon=cfg.plan.horizon, receding_horizon=cfg.plan.receding_horizon, action_block=cfg.action_block
    )
    return swm.policy.WorldModelPolicy(solver=solver, config=config, process={"action": BoxClip(action_space)})


def markdown(report: dict) -> str:
    lines = [
        f"# {report['env']}: stable-worldmodel's protocol",
        "",
        f"{report['tasks']} tasks (of {report['task_candidates']} held-out (episode, start) pairs), goal offset "
        f"{report['protocol']['goal_offset']}, budget {report['protocol']['budget']} env steps; "
        f"{report['collect']['episodes']} episodes collected by {report['collect']['policy']}.",
        "",
        "| method | success % | 95 % interval | wall seconds |",
        "| --- | ---: | --- | ---: |",
    ]
    for name, row in report["methods"].items():
        low, high = row["success_ci95"]
        lines.append(f"| {name} | {row['success_rate']:.0f} | {low:.0f}-{high:.0f} | {row['seconds']:.1f} |")
    lines += ["", f"Goal cost: {report['plan']['cost']}, maps blurred by {report['plan']['cost_blur']} patches."]
    if any(name.startswith("perfect_model_") for name in report["methods"]):
        lines[-1] += " perfect_model rows: the same search and cost with the env itself as the world model."
    ranks = report["recorded_beats_random"]
    if ranks["token"] is not None:
        lines += [
            "",
            f"The world model ranks the recorded actions from start to goal above {100 * ranks['token']:.0f} % of "
            f"{RANDOM_SEQUENCES} random sequences with the token cost, {100 * ranks['features']:.0f} % with the "
            "feature cost (50 %: it cannot tell them apart).",
        ]
    lines += ["", f"Machine: {report['machine']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    cfg: SwmProtocolConfig = parse_bench_config(
        SwmProtocolConfig,
        __doc__,
        DEFAULT_CONFIG,
        argv,
        "folder for the collected data, the models, report.json and report.md",
    )
    check_config(cfg)
    cfg.tokenizer.checkpoint = given_tokenizer(cfg.tokenizer.checkpoint, "the collected episodes")
    swm = import_stable_worldmodel()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # The harness keeps its dataset cache under STABLEWM_HOME (default ~/.stable_worldmodel): the run's own folder.
    os.environ.setdefault("STABLEWM_HOME", str(out / "stablewm_home"))
    started, load_before = time.perf_counter(), load_average()
    phases = Phases()
    collected, episodes = out / "collected", out / "episodes"
    if not collected.is_dir():
        phases.start("collect")
        print(f"collecting {cfg.collect.episodes} episodes of {cfg.env} ({cfg.collect.policy}) into {collected}")
        collect(swm, cfg, collected)
    if not any(episodes.glob(EPISODE_GLOB)):
        phases.start("convert")
        convert_dataset(collected, episodes, cfg.env, cfg.action_block, frame_size=cfg.frame_size, overwrite=True)
    dataset = swm.data.load_dataset(str(collected))
    with gymnasium.make(cfg.env) as env:  # importing the harness registered its envs
        action_space = env.action_space
    action_dim = cfg.action_block * action_space.shape[0]
    models = train_models(
        out,
        episodes,
        cfg.frame_size,
        cfg.tokenizer,
        cfg.tokenizer_train,
        {"deltaworld": cfg.deltaworld},
        action_dim,
        cfg.seed,
        phases,
    )
    prepared = time.perf_counter() - started
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    files = episode_files(episodes)
    held = [files.index(path) for path in held_out(files)]
    lengths = [int(n) for n in dataset.lengths]
    task_episodes, task_starts, candidates = draw_tasks(lengths, held, cfg.eval)
    world_model = load_world_model(models["deltaworld"]).to(cfg.device)
    methods: dict[str, dict] = {}
    searches = [
        ("deltaworld", spec, lambda: deltaworld_cost(cfg, world_model, action_space, cfg.plan.cost))
        for spec in cfg.eval.solvers
    ]
    searches += [
        ("perfect_model", spec, lambda: PerfectModelCost(cfg, world_model, action_space))
        for spec in cfg.eval.perfect_model
    ]
    for model, spec, make_cost in searches:
        name = f"{model}_{cfg.plan.cost}_cem_{budget_name(with_budget(PlannerConfig(), spec))}"
        print(f"evaluating {name} on {len(task_episodes)} tasks", flush=True)
        phases.start(f"eval_{name}")
        policy = cem_policy(swm, cfg, make_cost(), action_space, spec)
        methods[name] = evaluate(swm, cfg, dataset, (task_episodes, task_starts), policy)
    baselines = {"random": lambda: swm.policy.RandomPolicy(seed=cfg.seed), "zero_action": lambda: zero_policy(swm)}
    for name in cfg.eval.baselines:
        phases.start(f"eval_{name}")
        methods[name] = evaluate(swm, cfg, dataset, (task_episodes, task_starts), baselines[name]())
    phases.start("recorded_rank")
    ranks = recorded_rank(cfg, dataset, world_model, action_space, (task_episodes, task_starts))
    phases.stop()
    report = {
        "env": cfg.env,
        "tasks": len(task_episodes),
        "task_candidates": candidates,
        "task_episodes": task_episodes,
        "task_starts": task_starts,
        "methods": methods,
        "recorded_beats_random": ranks,
        "protocol": {"goal_offset": cfg.eval.goal_offset, "budget": cfg.eval.budget, "seed": cfg.eval.seed},
        "collect": {**vars(cfg.collect), "policy_kwargs": dict(cfg.collect.policy_kwargs)},
        "plan": {**vars(cfg.plan), "action_block": cfg.action_block, "solvers": list(cfg.eval.solvers)},
        "peers_budget": list(BUDGETS["peers"]),
        "torch_threads": torch.get_num_threads(),
        "device": cfg.device,
        "machine": machine_summary(load_before),
        "prepare_seconds": prepared,
        "phase_seconds": phases.seconds,
        "total_seconds": time.perf_counter() - started,
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "report.md", markdown(report))
    print(markdown(report))
    print(f"report in {out / 'report.json'} and {out / 'report.md'}")


if __name__ == "__main__":
    run_cli(main)
