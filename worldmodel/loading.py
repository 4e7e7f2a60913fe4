"""The function forms of `WorldModel.build` and `WorldModel.from_pretrained`."""

from __future__ import annotations

from pathlib import Path

import torch

from tokenizer.model import Tokenizer
from worldmodel.world import WorldModel, WorldModelConfig


def build_world_model(tokenizer: Tokenizer, config: WorldModelConfig) -> WorldModel:
    """`WorldModel.build`: a fresh world model of `config.kind`."""
    return WorldModel.build(tokenizer, config)


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
    """`WorldModel.from_pretrained`: a Hub id, our saved folder, or a released predictor file."""
    return WorldModel.from_pretrained(source, tokenizer, config, backbone=backbone, revision=revision, cache_dir=cache_dir, device=device)
