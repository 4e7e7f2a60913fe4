"""The world-model run config: what `train_world_model.py` and `python -m worldmodel.token_cache` read."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenizer.backbone import RANDOM_INIT_NAME, BackboneConfig
from tokenizer.data.registry import DataConfig
from tokenizer.deltatok import DeltaTokConfig
from tokenizer.model import Tokenizer, TokenizerConfig
from tokenizer.released import released_model
from tokenizer.runtime.run_config import RunConfig, TrainConfig
from worldmodel.world import WorldModelConfig


@dataclass
class TokenizerSource:
    """The frozen tokenizer whose delta tokens the world model predicts."""

    # Our saved tokenizer folder (a train_tokenizer.py run's final/) or its Hub id, the released id
    # Amazon-FAR/deltatok-kinetics, or a DeltaTok weights file (.bin/.pt/.safetensors) described by the
    # `backbone` and `model` sections below (folders and released ids carry their own config; for a released id,
    # a backbone.name other than random-init-dinov3 replaces its DINOv3, e.g. with a local copy of it).
    checkpoint: str = "runs/tokenizer_tiny/final"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # a weights file's backbone (see checkpoint)
    model: DeltaTokConfig = field(default_factory=DeltaTokConfig)  # a weights file's DeltaTok (see checkpoint)


@dataclass
class EvalConfig:
    """The validation rollouts scored during and after training."""

    context: int = 4  # context frames of a validation rollout
    horizon: int = 1  # imagined frames after them


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


def load_tokenizer(source: TokenizerSource) -> Tokenizer:
    """The tokenizer `source.checkpoint` names: a saved folder or a released id with its own config, or a bare
    weights file described by the `backbone` and `model` sections. For a released id, a `backbone.name` other
    than the random-init default replaces the released DINOv3 (e.g. a local copy of it)."""
    if released_model(source.checkpoint) is not None:
        backbone = source.backbone.name if source.backbone.name != RANDOM_INIT_NAME else None
        return Tokenizer.from_pretrained(source.checkpoint, backbone=backbone)
    return Tokenizer.from_pretrained(source.checkpoint, TokenizerConfig(backbone=source.backbone, model=source.model))
