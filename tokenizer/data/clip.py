"""The clip dict every dataset of the project returns.

Keys (T frames, H x W pixels):
    frames       uint8   (T, 3, H, W) RGB, channels first
    timestamps   float32 (T,) seconds, first frame at 0, strictly increasing
    num_skipped  int64   () unreadable or unusable files skipped while producing this item
    segmentation int64   (T, H_l, W_l) class ids, IGNORE_INDEX where unlabelled (evaluation sets only)
    depth        float32 (T, H_l, W_l) metres, 0 where invalid (evaluation sets only)

Labels keep their own resolution (H_l, W_l), usually the source resolution,
so metrics are computed there; the task heads bring predictions to it (worldmodel.heads.to_label_size).
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = 255


def make_clip(
    frames: torch.Tensor,
    timestamps: np.ndarray,
    num_skipped: int,
    segmentation: torch.Tensor | None = None,
    depth: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Assemble a clip dict; `timestamps` (T,) seconds are shifted so the first frame is at 0."""
    times = np.asarray(timestamps, dtype=np.float64)
    clip = {
        "frames": frames.contiguous(),
        "timestamps": torch.from_numpy((times - times[0]).astype(np.float32)),
        "num_skipped": torch.tensor(num_skipped, dtype=torch.int64),
    }
    if segmentation is not None:
        clip["segmentation"] = segmentation
    if depth is not None:
        clip["depth"] = depth
    return clip
