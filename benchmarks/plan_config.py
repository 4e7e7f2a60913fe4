"""What `make plan-bench` runs (configs/plan_bench/*.yaml, one per env): shared by the plan bench and `make bench`'s
planning latency (which reads configs/plan_bench/shapes.yaml's planner and world-model sections)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envs.planners import PlannerConfig
from tokenizer.model import TokenizerSource

METHODS = (
    "deltaworld_token_cem",
    "deltaworld_token_mppi",
    "deltaworld_feature_cem",
    "dinoworld_cem",
    "random",
    "zero_action",
    "replay",
)
TASK_SETS = ("needs_acting", "all")
BUDGET_METHODS = ("deltaworld_token_cem", "deltaworld_feature_cem", "dinoworld_cem")


@dataclass
class RecordSection:
    episodes: int = 200  # every tenth is held out of training and gives the evaluation's start states and goals
    max_steps: int = 100  # env steps per recorded episode at most
    # random, smooth, pusht_near_block (envs.policies) or "package.module:factory", as `python -m envs.recording`
    policy: str = "random"
    policy_kwargs: dict[str, Any] = field(default_factory=dict)  # keywords of the policy's factory
    frame_size: int = 64  # square frames the tokenizer and world models see
    state_key: str | None = None  # info entry recorded as the state; null = the observation vector


@dataclass
class TrainSection:
    config: str = "configs/world_model/tiny_actions.yaml"
    overrides: list[str] = field(
        default_factory=list
    )  # dotted overrides after the bench's own (output_dir, data.root, tokenizer)


@dataclass
class StateTestSection:
    """A further success test (`eval.more_tests`), with the keys of the first."""

    tolerance: float = 0.1
    state_dims: list[int] = field(default_factory=list)
    state_scale: list[float] = field(default_factory=list)
    state_angles: list[int] = field(default_factory=list)


@dataclass
class EvalSection:
    episodes: int = 50  # tasks per task set, the same for every method
    goal_offset: int = 25  # env steps from the start state to the goal frame in the recording
    budget: int = 50  # env steps an agent has to reach the goal state
    # Success: the state within `tolerance` of the goal's over `state_dims`, each entry divided by its `state_scale`,
    # `state_angles` compared the short way round; and within each of `more_tests` too.
    tolerance: float = 0.1  # success: distance to the goal state at most this (see state_dims, state_scale)
    state_dims: list[int] = field(default_factory=list)  # recorded state entries compared; [] = all
    state_scale: list[float] = field(default_factory=list)  # each compared entry divided by this first; [] = 1
    state_angles: list[int] = field(default_factory=list)  # entries in radians, compared the short way round
    more_tests: list[StateTestSection] = field(default_factory=list)  # further tests a success must also pass
    # all: (held-out episode, start) pairs drawn at random; needs_acting: only those whose start is not at the goal,
    # which the zero action does not solve within the budget, and whose goal differs in `must_change`.
    task_sets: list[str] = field(default_factory=lambda: list(TASK_SETS))
    must_change: list[int] = field(default_factory=list)  # needs_acting: state entries the goal must differ in
    seed: int = 1000  # draws the tasks
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    # Search budgets scored on the first task set for `budget_methods`, each a preset (envs.planners.BUDGETS) or
    # "CANDIDATESxITERATIONS[/ELITES]"; the planner section's own budget is always one of them.
    budgets: list[str] = field(default_factory=list)
    budget_methods: list[str] = field(default_factory=lambda: list(BUDGET_METHODS))
    # The sweep's time: (method, budget) pairs run cheapest first while their estimated time (the method's seconds at
    # the planner's budget, scaled by one timed search iteration) fits these minutes; the rest are reported skipped.
    budget_minutes: float = 10.0


@dataclass
class PlanBenchConfig:
    env: str = "deltaworld/Shapes-v0"  # any Gymnasium id with a Box action space and rgb_array rendering
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # keyword arguments of gymnasium.make
    seed: int = 0
    out: str = "runs/plan_bench"
    device: str = "cpu"  # where the world models plan (cpu, cuda, cuda:1, ...); every planning tensor is made there
    # Env steps per world-model step: the model sees every action_repeat-th frame and the block of actions
    # between, concatenated (the peers' frameskip 5); the planner's horizon counts blocks.
    action_repeat: int = 5
    # The tokenizer both world models read, as in the world-model configs (a folder, Hub id or described weights
    # file); checkpoint null = one trained on the recorded episodes with `tokenizer_train` into <out>/tokenizer.
    tokenizer: TokenizerSource = field(default_factory=lambda: TokenizerSource(checkpoint=None))
    tokenizer_train: TrainSection = field(default_factory=lambda: TrainSection(config="configs/tokenizer/tiny.yaml"))
    record: RecordSection = field(default_factory=RecordSection)
    deltaworld: TrainSection = field(default_factory=TrainSection)
    dinoworld: TrainSection = field(
        default_factory=lambda: TrainSection(config="configs/world_model/tiny_dinoworld.yaml")
    )
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    eval: EvalSection = field(default_factory=EvalSection)
