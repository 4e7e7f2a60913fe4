"""What `make plan-bench` runs (configs/plan_bench/shapes.yaml): shared by the plan bench and `make bench`'s planning latency."""

from __future__ import annotations

from dataclasses import dataclass, field

from envs.planners import PlannerConfig


@dataclass
class RecordSection:
    episodes: int = 200
    max_steps: int = 40


@dataclass
class TrainSection:
    config: str = "configs/world_model/tiny_actions.yaml"
    overrides: list[str] = field(default_factory=list)  # dotted overrides after the bench's own (output_dir, data.root, tokenizer)


@dataclass
class EvalSection:
    episodes: int = 20
    max_steps: int = 40  # env steps before an episode counts as failed
    seed: int = 1000  # episode i is reset with seed + i, the same for every method


@dataclass
class PlanBenchConfig:
    seed: int = 0
    out: str = "runs/plan_bench"
    tokenizer: str = "runs/tokenizer_tiny/final"
    record: RecordSection = field(default_factory=RecordSection)
    deltaworld: TrainSection = field(default_factory=TrainSection)
    dinoworld: TrainSection = field(default_factory=lambda: TrainSection(config="configs/world_model/tiny_dinoworld.yaml"))
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    eval: EvalSection = field(default_factory=EvalSection)
