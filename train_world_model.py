"""Train a world model (DeltaWorld, or the patch-level DINOWorld baseline) on top of a trained tokenizer.

    python train_world_model.py --config configs/world_model/tiny.yaml [dotted.key=value ...]
    accelerate launch --multi_gpu --num_processes 8 train_world_model.py --config configs/world_model/vitb_dinov3_kinetics.yaml \
        tokenizer.checkpoint=path/to/deltatok-kinetics/pytorch_model.bin
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from envs.data import DataConfig, build_dataset
from tokenizer.backbone import BackboneConfig
from tokenizer.cli import parse_run_config, run_cli
from tokenizer.config import to_object
from tokenizer.deltatok import DeltaTokConfig
from tokenizer.model import Tokenizer, TokenizerConfig
from worldmodel.engine import TrainConfig, train
from worldmodel.training import WorldModelTask
from worldmodel.world import WorldModelConfig, build_world_model


@dataclass
class TokenizerSource:
    # Our saved tokenizer folder (a train_tokenizer.py run's final/), or a released DeltaTok
    # weights file (.bin/.pt/.safetensors) described by the `backbone` and `model` sections below.
    checkpoint: str = "runs/tokenizer_tiny/final"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: DeltaTokConfig = field(default_factory=DeltaTokConfig)


@dataclass
class EvalConfig:
    context: int = 4  # context frames of a validation rollout
    horizon: int = 1  # imagined frames after them


@dataclass
class WorldModelRunConfig:
    output_dir: str = "runs/world_model_tiny"
    seed: int = 0
    resume: bool = False  # continue from the newest complete checkpoint in output_dir
    overwrite: bool = False  # replace a run already in output_dir
    tokenizer: TokenizerSource = field(default_factory=TokenizerSource)
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def load_tokenizer(source: TokenizerSource) -> Tokenizer:
    return Tokenizer.from_pretrained(source.checkpoint, TokenizerConfig(backbone=source.backbone, model=source.model))


def main(argv: list[str] | None = None) -> None:
    run = parse_run_config(WorldModelRunConfig, __doc__, "configs/world_model/tiny.yaml", argv)
    torch.manual_seed(run.seed)
    tokenizer = load_tokenizer(to_object(run.tokenizer))
    world = build_world_model(tokenizer, to_object(run.model))
    data = to_object(run.data)
    tokenizer.backbone.grid(data.frame_size, data.frame_size)  # a bad frame size fails here, before output_dir is touched
    task = WorldModelTask(world, run.eval.context, run.eval.horizon, run.model.num_samples, run.seed)
    val_frames = run.eval.context + run.eval.horizon
    train(run, task, build_dataset(data, "train", run.seed), build_dataset(data, "val", run.seed, num_frames=val_frames))


if __name__ == "__main__":
    run_cli(main)
