"""Which world model a config makes (DeltaWorld or the patch-level DINOWorld), and loading a saved or released one."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from tokenizer.model import Tokenizer
from tokenizer.released import WORLD_MODEL, released_model
from tokenizer.runtime.config import merge_config, to_object
from tokenizer.runtime.errors import CheckpointError, ConfigError
from tokenizer.runtime.files import load_module_weights, load_weights
from tokenizer.runtime.hub import resolve
from worldmodel.deltaworld import DeltaWorld
from worldmodel.dinoworld import DINOWorld
from worldmodel.world import CONFIG_FILE, READOUT_FILE, TOKENIZER_DIR, WEIGHTS_FILE, WorldModel, WorldModelConfig, read_world_config

log = logging.getLogger(__name__)


def build_world_model(tokenizer: Tokenizer, config: WorldModelConfig) -> WorldModel:
    kinds = {"deltaworld": DeltaWorld, "dinoworld": DINOWorld}
    if config.kind not in kinds:
        raise ConfigError(f"model.kind {config.kind!r} is not one of {', '.join(kinds)}")
    return kinds[config.kind].build(tokenizer, config)


def load_world_model(
    source: str | Path,
    tokenizer: Tokenizer | None = None,
    config: WorldModelConfig | None = None,
    *,
    backbone: str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
) -> WorldModel:
    """Load a world model, in eval mode, from a Hub id, our saved folder, or a released predictor file.

    `source`: a released id (`Amazon-FAR/deltaworld-kinetics`: config and tokenizer from tokenizer.released),
    a Hub repo or local folder written by `save_pretrained` / `push_to_hub` (config and tokenizer inside),
    or a bare weights file (`predictor.*` keys) whose `config` and `tokenizer` must be given. A given
    `tokenizer` or `config` replaces the saved or released one. `backbone`, `revision`, `cache_dir` and
    `device` mean what they mean for `Tokenizer.from_pretrained`.
    """
    released = released_model(source, WORLD_MODEL)
    path = resolve(source, "world model", revision, cache_dir).path
    own_folder = path.is_dir() and (path / CONFIG_FILE).is_file()
    if own_folder:
        config = config or read_world_config(path)
        tokenizer = tokenizer or Tokenizer.from_pretrained(path / TOKENIZER_DIR, backbone=backbone, cache_dir=cache_dir)
        weights = path / WEIGHTS_FILE
    elif released is not None:
        config = config or to_object(merge_config(WorldModelConfig, released.config, origin=f"released {released.repo_id}"))
        tokenizer = tokenizer or Tokenizer.from_pretrained(released.tokenizer, backbone=backbone, cache_dir=cache_dir)
        weights = path / released.filename if path.is_dir() else path
    elif path.is_dir():
        raise CheckpointError(f"{source} holds no {CONFIG_FILE}: pass a folder written by save_pretrained, a released id, or a weights file")
    elif config is None or tokenizer is None:
        raise CheckpointError(f"{source} is a bare weights file: pass the world-model config and the tokenizer it was trained with")
    else:
        weights = path
    if not own_folder and config.readout.enabled:
        log.warning("%s is a bare weights file without a readout: loading it without one (planning uses the feature cost)", source)
        config = replace(config, readout=replace(config.readout, enabled=False))
    world = build_world_model(tokenizer, config)
    state = load_weights(weights, f"world-model checkpoint {weights}")
    # Released files hold only trained weights; a frozen tokenizer copy, if present, is not ours to load.
    state = {key: value for key, value in state.items() if not key.startswith(("tokenizer.", "backbone."))}
    load_module_weights(world.objective, state, f"world-model checkpoint {weights}")
    if world.readout is not None:
        readout = path / READOUT_FILE
        readout_state = load_weights(readout, "readout")
        if config.readout.anchor_queries and not any(key.startswith("anchor_proj.") for key in readout_state):
            raise CheckpointError(
                f"readout {readout} was saved before readouts had anchored queries: "
                f"add `anchor_queries: false` under `readout:` in {path / 'config.yaml'} to load it as it was trained"
            )
        load_module_weights(world.readout, readout_state, f"readout {readout}")
    return world.to(device).eval() if device is not None else world.eval()
