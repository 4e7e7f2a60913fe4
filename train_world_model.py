"""Train a world model (DeltaWorld, or the patch-level DINOWorld baseline) on top of a trained tokenizer.

    python train_world_model.py --config configs/world_model/tiny.yaml [dotted.key=value ...]
    accelerate launch --multi_gpu --num_processes 8 train_world_model.py \
        --config configs/world_model/vitb_dinov3_kinetics.yaml \
        tokenizer.checkpoint=Amazon-FAR/deltatok-kinetics
"""

from __future__ import annotations

import logging

import torch
from omegaconf import DictConfig

from tokenizer.data.registry import build_dataset
from tokenizer.runtime.cli import parse_run_config, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.engine import train
from tokenizer.runtime.files import load_module_weights
from tokenizer.runtime.run_folder import weights_to_start_from
from worldmodel.run_config import WorldModelRunConfig
from worldmodel.training import WorldModelTask
from worldmodel.world import WorldModel, build_world_model, load_world_model

log = logging.getLogger(__name__)


def start_from(world: WorldModel, init_from: str) -> None:
    """Copy the trained weights of `init_from` (a saved world-model folder, a released id or predictor file, each
    read into this run's model config) into `world`'s objective and readout; the frozen tokenizer stays the run's
    own."""
    # Loading builds another world model: forking keeps the run's random stream where a fresh run's is.
    with torch.random.fork_rng(devices=[]):
        source = load_world_model(init_from, world.tokenizer, world.config)
    load_module_weights(world.objective, source.objective.state_dict(), f"init_from {init_from}")
    if world.readout is None:
        return
    if source.readout is None:
        # A released predictor file holds no readout (load_world_model has said so): this run trains one from scratch.
        log.warning("init_from %s holds no readout: the readout starts from its own initialisation", init_from)
        return
    load_module_weights(world.readout, source.readout.state_dict(), f"init_from {init_from} (readout)")


def main(argv: list[str] | None = None) -> None:
    train_world_model(parse_run_config(WorldModelRunConfig, __doc__, "configs/world_model/tiny.yaml", argv))


def train_world_model(run: DictConfig) -> None:
    """Train on a merged `WorldModelRunConfig` (`load_config`): the command, after reading its arguments."""
    init_from = weights_to_start_from(run)
    torch.manual_seed(run.seed)
    tokenizer = to_object(run.tokenizer).load()
    world = build_world_model(tokenizer, to_object(run.model))
    if init_from:
        start_from(world, init_from)
    data = to_object(run.data)
    scored = to_object(run.eval)
    scored.validate()
    task = WorldModelTask(world, scored.context, scored.horizons, run.model.num_samples, run.seed)
    # A token cache (data.source=tokens, worldmodel.token_clips) reads the world model and where its tokenizer came
    # from.
    train_set = build_dataset(
        data, "train", run.seed, tokenizer=tokenizer, world=world, tokenizer_name=run.tokenizer.checkpoint
    )
    val_frames = scored.context + max(scored.horizons)
    train(run, task, train_set, build_dataset(data, "val", run.seed, num_frames=val_frames))


if __name__ == "__main__":
    run_cli(main)
