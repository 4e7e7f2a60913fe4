"""Patch features as maps: the layout the task heads and the readout both read features in."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tokenizer.runtime.errors import InputError


def features_to_map(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch features (B, N, D), N = h * w row-major -> feature map (B, D, h, w)."""
    h, w = grid
    if features.ndim != 3 or features.shape[1] != h * w:
        raise InputError(
            f"features must have shape (B, N, D) with N = {h}*{w} = {h * w} patches, got {tuple(features.shape)}"
        )
    return features.transpose(1, 2).reshape(features.shape[0], features.shape[2], h, w)


def spatial_blur(features: torch.Tensor, grid: tuple[int, int], sigma: tuple[float, float]) -> torch.Tensor:
    """Patch features (..., N, D) on a (rows, cols) grid -> the same, each feature channel smoothed by a Gaussian of
    std `sigma` = (rows, cols) in grid cells, edges extended; a sigma of 0 leaves that axis as it is.

    A goal cost on smoothed maps counts an object a few cells from its goal place as nearer than one across the
    frame (envs.goals: `cost_blur`); on raw maps both count the same once they no longer overlap."""
    lead = features.shape[:-2]
    maps = features_to_map(features.reshape(-1, *features.shape[-2:]).float(), grid)
    for axis, std in zip((2, 3), sigma):
        if std <= 0:
            continue
        radius = max(1, math.ceil(3 * std))
        offsets = torch.arange(-radius, radius + 1, dtype=maps.dtype, device=maps.device)
        kernel = torch.exp(-(offsets**2) / (2 * std**2))
        shape = [1, 1, 1, 1]
        shape[axis] = kernel.numel()
        pad = (0, 0, radius, radius) if axis == 2 else (radius, radius, 0, 0)
        weight = (kernel / kernel.sum()).view(shape).expand(maps.shape[1], *shape[1:])
        maps = F.conv2d(F.pad(maps, pad, mode="replicate"), weight, groups=maps.shape[1])
    return maps.flatten(2).transpose(1, 2).reshape(*lead, -1, features.shape[-1])
