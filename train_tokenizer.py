"""Train the DeltaTok tokenizer.

python train_tokenizer.py --config configs/tokenizer/tiny.yaml [dotted.key=value ...]
accelerate launch --multi_gpu --num_processes 8 train_tokenizer.py --config configs/tokenizer/vitb_dinov3_kinetics.yaml
"""

from __future__ import annotations

from pathlib import Path

import torch
from accelerate import PartialState
from omegaconf import DictConfig

from tokenizer.data.registry import build_dataset
from tokenizer.model import Tokenizer, TokenizerConfig
from tokenizer.run_config import TokenizerRunConfig
from tokenizer.runtime.cli import parse_run_config, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.devices import launched_on_cpu
from tokenizer.runtime.engine import train
from tokenizer.runtime.files import load_module_weights
from tokenizer.runtime.run_folder import prepare_output_dir, weights_to_start_from
from tokenizer.training import FeaturePool, TokenizerTask


def main(argv: list[str] | None = None) -> None:
    train_tokenizer(parse_run_config(TokenizerRunConfig, __doc__, "configs/tokenizer/tiny.yaml", argv))


def train_tokenizer(run: DictConfig) -> None:
    """Train on a merged `TokenizerRunConfig` (`load_config`): the command, after reading its arguments."""
    init_from = weights_to_start_from(run)
    torch.manual_seed(run.seed)
    tokenizer = Tokenizer.build(TokenizerConfig(backbone=to_object(run.backbone), model=to_object(run.model)))
    if init_from:
        # Loading builds another tokenizer: forking keeps the run's random stream where a fresh run's is.
        with torch.random.fork_rng(devices=[]):
            source = Tokenizer.from_pretrained(init_from, tokenizer.config)
        load_module_weights(tokenizer.deltatok, source.deltatok.state_dict(), f"init_from {init_from}")
        if not tokenizer.backbone.is_pretrained and not source.backbone.is_pretrained:
            # A random-init backbone is part of what was trained on: the next stage reads the same features.
            load_module_weights(
                tokenizer.backbone.model, source.backbone.model.state_dict(), f"init_from {init_from} backbone"
            )
    data = to_object(run.data)
    train_set, task = build_dataset(data, "train", run.seed, tokenizer=tokenizer), TokenizerTask(tokenizer)
    if run.feature_pool:
        # A run the engine would refuse is refused before the pool's minute of encoding.
        to_object(run.train).validate(task.module)
        prepare_output_dir(Path(run.output_dir), run.resume, run.overwrite)
        state = PartialState(cpu=launched_on_cpu())
        device = state.device  # this process's device, as the engine's Accelerator picks it
        per_step = max(run.train.effective_batch_size or 0, run.train.batch_size * state.num_processes)
        train_set = FeaturePool(
            tokenizer.to(device),
            train_set,
            run.feature_pool,
            run.train.batch_size,
            device,
            run.train.max_steps * per_step,
        )
        task = TokenizerTask(tokenizer, feature_grid=train_set.grid)
    train(run, task, train_set, build_dataset(data, "val", run.seed))


if __name__ == "__main__":
    run_cli(main)
