"""The tokenizer run config: what `train_tokenizer.py` reads (configs/tokenizer/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenizer.backbone import BackboneConfig
from tokenizer.data.registry import DataConfig
from tokenizer.deltatok import DeltaTokConfig
from tokenizer.runtime.run_config import RunConfig, TrainConfig


@dataclass
class TokenizerRunConfig(RunConfig):
    output_dir: str = "runs/tokenizer_tiny"
    # Clips whose backbone features are computed once, before the first step, and served in turn for the whole
    # run (tokenizer.training.FeaturePool); 0 = fresh clips every step, as the paper trains. A pool larger than the
    # clips the run draws (train.max_steps x the batch) is cut to that.
    feature_pool: int = 0
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: DeltaTokConfig = field(default_factory=DeltaTokConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
