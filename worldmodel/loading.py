"""Which world model a config makes (DeltaWorld or the patch-level DINOWorld), and loading a saved one."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from tokenizer.model import Tokenizer
from tokenizer.runtime.errors import CheckpointError, ConfigError
from tokenizer.runtime.files import load_module_weights, load_weights
from worldmodel.deltaworld import DeltaWorld
from worldmodel.dinoworld import DINOWorld
from worldmodel.world import READOUT_FILE, TOKENIZER_DIR, WEIGHTS_FILE, WorldModel, WorldModelConfig, read_world_config

log = logging.getLogger(__name__)


def build_world_model(tokenizer: Tokenizer, config: WorldModelConfig) -> WorldModel:
    kinds = {"deltaworld": DeltaWorld, "dinoworld": DINOWorld}
    if config.kind not in kinds:
        raise ConfigError(f"model.kind {config.kind!r} is not one of {', '.join(kinds)}")
    return kinds[config.kind].build(tokenizer, config)


def load_world_model(path: str | Path, tokenizer: Tokenizer | None = None, config: WorldModelConfig | None = None) -> WorldModel:
    """Our saved folder, or a released weights file (`predictor.*` keys) given its config and tokenizer."""
    path = Path(path)
    if path.is_dir():
        config = read_world_config(path)
        tokenizer = tokenizer or Tokenizer.from_pretrained(path / TOKENIZER_DIR)
        weights = path / WEIGHTS_FILE
    else:
        if config is None or tokenizer is None:
            raise CheckpointError(f"{path} is a bare weights file: pass the world-model config and the tokenizer it was trained with")
        weights = path
        if config.readout.enabled:
            log.warning("%s is a bare weights file without a readout: loading it without one (planning uses the feature cost)", path)
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
    return world.eval()
