"""Patch features as maps: the layout the task heads and the readout both read features in."""

from __future__ import annotations

import torch

from tokenizer.runtime.errors import InputError


def features_to_map(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch features (B, N, D), N = h * w row-major -> feature map (B, D, h, w)."""
    h, w = grid
    if features.ndim != 3 or features.shape[1] != h * w:
        raise InputError(
            f"features must have shape (B, N, D) with N = {h}*{w} = {h * w} patches, got {tuple(features.shape)}"
        )
    return features.transpose(1, 2).reshape(features.shape[0], features.shape[2], h, w)
