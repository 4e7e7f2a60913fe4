"""Spatial transforms of frame stacks: random resized crop, resizing, eval sizes."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio_jitter: float,
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) of a random crop for a square output.

    The crop covers a fraction of the frame area drawn uniformly from `scale`,
    with width / height drawn log-uniformly from [1 / ratio_jitter, ratio_jitter]
    (the usual RandomResizedCrop recipe: 10 tries, then the largest centred crop
    whose aspect ratio lies in the range).
    """
    area = height * width
    log_low, log_high = -math.log(ratio_jitter), math.log(ratio_jitter)
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        ratio = math.exp(rng.uniform(log_low, log_high))
        crop_w = int(round(math.sqrt(target_area * ratio)))
        crop_h = int(round(math.sqrt(target_area / ratio)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return top, left, crop_h, crop_w
    ratio = min(max(width / height, 1 / ratio_jitter), ratio_jitter)
    if width / height > ratio:
        crop_h, crop_w = height, int(round(height * ratio))
    else:
        crop_h, crop_w = int(round(width / ratio)), width
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def center_square_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, side, side) of the largest centred square."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def to_channels_first(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) array -> uint8 (T, 3, H, W) tensor."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (T, 3, h, w) -> uint8 (T, 3, height, width), bilinear with antialiasing."""
    if frames.shape[-2:] == (height, width):
        return frames.contiguous()
    # Antialiasing matters: training crops are often shrunk several times. torch
    # resizes uint8 directly, an order of magnitude faster than through float.
    return F.interpolate(
        frames, size=(height, width), mode="bilinear", antialias=True, align_corners=False
    ).contiguous()


def eval_resize_shape(height: int, width: int, short_side: int, max_aspect_ratio: float) -> tuple[int, int]:
    """(new_height, new_width) with the short side at `short_side`, aspect ratio kept.

    Each side is capped at `short_side * max_aspect_ratio`, so very wide frames
    (KITTI) are squeezed to that ratio, as in the paper's evaluation.
    """
    scale = short_side / min(height, width)
    cap = int(short_side * max_aspect_ratio)
    return min(int(round(height * scale)), cap), min(int(round(width * scale)), cap)
