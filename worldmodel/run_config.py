"""The world-model run config: what `train_world_model.py` and `python -m worldmodel.token_cache` read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from tokenizer.data.registry import DataConfig
from tokenizer.model import TokenizerSource
from tokenizer.runtime.errors import ConfigError
from tokenizer.runtime.run_config import RunConfig, TrainConfig
from worldmodel.world import WorldModelConfig


@dataclass
class EvalConfig:
    """The validation rollouts scored during and after training."""

    REFUSED_KEYS: ClassVar[dict[str, str]] = {"horizon": "horizons"}  # rollout.py's name, one name per thing

    context: int = 4  # context frames of a validation rollout
    # Imagined frames after them that are scored (rolled out to the last, losses averaged over these): as
    # rollout.py's eval.horizons.
    horizons: list[int] = field(default_factory=lambda: [1])

    def validate(self) -> None:
        if self.context < 1:
            raise ConfigError(f"eval.context must be at least 1, got {self.context}")
        if not self.horizons or min(self.horizons) < 1:
            raise ConfigError(f"eval.horizons must be a non-empty list of steps of at least 1, got {self.horizons}")


@dataclass
class TokenCacheConfig:
    """`python -m worldmodel.token_cache`: tokenize `num_clips` clips of `data.*` once into `out`."""

    out: str = "runs/tokens_tiny"  # folder of the shards, plan.json and manifest.json; data.root when training on it
    num_clips: int = 4096  # clips 0..num_clips-1 of the training source (a stream such as Shapes needs a count)
    shard_clips: int = 1024  # clips per safetensors shard; shards are the unit of resuming and of work per process
    batch_size: int = 64  # clips tokenized at once
    dtype: str = "float32"  # float32 | bfloat16 (half the size on disk)
    overwrite: bool = False  # replace a cache of another configuration in `out`


@dataclass
class WorldModelRunConfig(RunConfig):
    output_dir: str = "runs/world_model_tiny"
    tokenizer: TokenizerSource = field(default_factory=TokenizerSource)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cache: TokenCacheConfig = field(default_factory=TokenCacheConfig)
