"""Shared fixtures: the published implementation's reference vectors (tests/reference_files.py), and small CPU
settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reference_files import load_reference

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)

# Fixtures of a Hugging Face cache holding the released models as tiny stand-ins, for every test module.
from hub_cache import heads_golden, offline_cache, tiny_released  # noqa: E402, F401


@pytest.fixture(scope="session")
def golden() -> dict:
    return load_reference("deltatok_reference_tiny.pt")


# A tokenizer small enough to train for a few steps in seconds: 32x32 frames, 4x4 patches, width 32.
MICRO_BACKBONE = [
    "backbone.hidden_size=32",
    "backbone.num_layers=1",
    "backbone.num_heads=2",
    "backbone.intermediate_size=64",
    "backbone.patch_size=8",
]
MICRO_TOKENIZER = MICRO_BACKBONE + [
    "feature_pool=0",
    "model.encoder_layers=0",
    "model.encoder_top_k=8",  # of the 16 patches of a 32-pixel frame: the scripts run the shipped recipe's path
    "model.num_layers=1",
    "model.mlp_hidden_size=64",
    "data.frame_size=32",
    "data.val_clips=4",
    "train.batch_size=4",
    "train.log_every=1",
    "train.trackers=[]",
]


def micro_tokenizer_config():
    from tokenizer.backbone import BackboneConfig
    from tokenizer.deltatok import DeltaTokConfig
    from tokenizer.model import TokenizerConfig

    return TokenizerConfig(
        backbone=BackboneConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, patch_size=8),
        model=DeltaTokConfig(num_layers=1, mlp_hidden_size=64),
    )


def micro_predictor_config(axes=(12,), **overrides):
    """A predictor to match the micro tokenizer: head size 16 = RoPE over `axes` (summing to 12) + 4 unrotated."""
    from worldmodel.predictor import PredictorConfig

    settings = dict(hidden_size=32, num_layers=1, num_heads=2, rope_axis_sizes=list(axes), rope_unrotated_size=4)
    return PredictorConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def tokenizer():
    """The micro tokenizer with seeded random weights, in eval mode."""
    from tokenizer.model import Tokenizer

    torch.manual_seed(0)
    return Tokenizer.build(micro_tokenizer_config()).eval()


def random_frames(batch: int, time: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, time, 3, size, size), dtype=torch.uint8, generator=generator)
