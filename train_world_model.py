"""Train a world model (DeltaWorld, or the patch-level DINOWorld baseline) on top of a trained tokenizer.

    python train_world_model.py --config configs/world_model/tiny.yaml [dotted.key=value ...]
    accelerate launch --multi_gpu --num_processes 8 train_world_model.py --config configs/world_model/vitb_dinov3_kinetics.yaml \
        tokenizer.checkpoint=path/to/deltatok-kinetics/pytorch_model.bin
"""

from __future__ import annotations

import torch

from tokenizer.data.registry import build_dataset
from tokenizer.runtime.cli import parse_run_config, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.engine import train
from tokenizer.runtime.errors import ConfigError
from worldmodel.loading import build_world_model
from worldmodel.run_config import WorldModelRunConfig, load_tokenizer
from worldmodel.token_cache import TOKENS_SOURCE, TokenClips, tokenizer_fingerprint
from worldmodel.training import WorldModelTask


def main(argv: list[str] | None = None) -> None:
    run = parse_run_config(WorldModelRunConfig, __doc__, "configs/world_model/tiny.yaml", argv)
    torch.manual_seed(run.seed)
    tokenizer = load_tokenizer(to_object(run.tokenizer))
    world = build_world_model(tokenizer, to_object(run.model))
    data = to_object(run.data)
    tokenizer.backbone.grid(data.frame_size, data.frame_size)  # a bad frame size fails here, before output_dir is touched
    task = WorldModelTask(world, run.eval.context, run.eval.horizon, run.model.num_samples, run.seed)
    val_frames = run.eval.context + run.eval.horizon
    if data.source == TOKENS_SOURCE:
        if not hasattr(world, "inputs_from_tokens"):
            raise ConfigError(f"data.source={TOKENS_SOURCE} trains on delta tokens; model.kind={run.model.kind} needs frames")
        if not data.val_source or data.val_source == TOKENS_SOURCE:
            raise ConfigError(
                f"data.source={TOKENS_SOURCE} needs data.val_source, a source of frames (e.g. shapes): validation imagines and decodes features"
            )
        train_set = TokenClips(data.root, data.num_frames, tokenizer_fingerprint(tokenizer), run.tokenizer.checkpoint)
    else:
        train_set = build_dataset(data, "train", run.seed)
    train(run, task, train_set, build_dataset(data, "val", run.seed, num_frames=val_frames))


if __name__ == "__main__":
    run_cli(main)
