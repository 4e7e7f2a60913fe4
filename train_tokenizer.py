"""Train the DeltaTok tokenizer.

    python train_tokenizer.py --config configs/tokenizer/tiny.yaml [dotted.key=value ...]
    accelerate launch --multi_gpu --num_processes 8 train_tokenizer.py --config configs/tokenizer/vitb_dinov3_kinetics.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import PartialState

from tokenizer.backbone import BackboneConfig
from tokenizer.data.registry import DataConfig, build_dataset
from tokenizer.deltatok import DeltaTokConfig
from tokenizer.model import Tokenizer, TokenizerConfig
from tokenizer.runtime.cli import parse_run_config, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.engine import RunConfig, TrainConfig, launched_on_cpu, prepare_output_dir, train
from tokenizer.training import FeaturePool, TokenizerTask


@dataclass
class TokenizerRunConfig(RunConfig):
    output_dir: str = "runs/tokenizer_tiny"
    # Clips whose backbone features are computed once, before the first step, and served in turn for the whole
    # run (tokenizer.training.FeaturePool); 0 = fresh clips every step, as the paper trains.
    feature_pool: int = 0
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: DeltaTokConfig = field(default_factory=DeltaTokConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def main(argv: list[str] | None = None) -> None:
    run = parse_run_config(TokenizerRunConfig, __doc__, "configs/tokenizer/tiny.yaml", argv)
    torch.manual_seed(run.seed)
    tokenizer = Tokenizer.build(TokenizerConfig(backbone=to_object(run.backbone), model=to_object(run.model)))
    data = to_object(run.data)
    tokenizer.backbone.grid(data.frame_size, data.frame_size)  # a bad frame size fails here, before output_dir is touched
    train_set, task = build_dataset(data, "train", run.seed), TokenizerTask(tokenizer)
    if run.feature_pool:
        # A run the engine would refuse is refused before the pool's minute of encoding.
        to_object(run.train).validate(task.module)
        prepare_output_dir(Path(run.output_dir), run.resume, run.overwrite, remove=False)
        device = PartialState(cpu=launched_on_cpu()).device  # this process's device, as the engine's Accelerator picks it
        train_set = FeaturePool(tokenizer.to(device), train_set, run.feature_pool, run.train.batch_size, device)
        task = TokenizerTask(tokenizer, feature_grid=train_set.grid)
    train(run, task, train_set, build_dataset(data, "val", run.seed))


if __name__ == "__main__":
    run_cli(main)
