"""Evaluating square-input models on rectangular frames.

Frames of H x W (H != W) become two squares of side min(H, W) at the two ends
of the long side, which overlap when the aspect ratio is below 2. Labels are
cut instead into two halves that share no pixel, so every labelled pixel is
scored exactly once; the task heads bring each square's prediction onto its
half (worldmodel.heads.to_label_size). Both stack the two parts along dim 0:
[first parts; second parts].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tokenizer.data.clip import IGNORE_INDEX


@dataclass(frozen=True)
class SquareSplit:
    """How `split_into_squares` cut a batch.

    is_wide: True when W > H (squares left and right), False when H > W
        (squares top and bottom), None when frames were already square.
    overlap: the squares overlap (aspect ratio < 2), so each label half is
        only part of its square.
    """

    is_wide: bool | None
    overlap: bool


def split_into_squares(
    frames: torch.Tensor, labels: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, SquareSplit]:
    """Frames (B, ..., H, W) -> (2B, ..., S, S) with S = min(H, W); labels (B, ..., H_l, W_l) -> two halves.

    Wide labels become (2B, ..., H_l, ceil(W_l / 2)): columns [0, W_l // 2) and
    [W_l // 2, W_l); when W_l is odd the first half gets one padding column at its
    far end (IGNORE_INDEX for integer labels, 0 for depth). Tall ones likewise by rows.
    Square frames are returned unchanged. Repeat per-clip tensors such as
    timestamps with `.repeat(2, ...)` to match the doubled batch.
    """
    height, width = frames.shape[-2:]
    if height == width:
        return frames, labels, SquareSplit(is_wide=None, overlap=False)
    is_wide = width > height
    side = min(height, width)
    if is_wide:
        squares = torch.cat([frames[..., :side], frames[..., width - side :]], dim=0)
    else:
        squares = torch.cat([frames[..., :side, :], frames[..., height - side :, :]], dim=0)
    split = SquareSplit(is_wide=is_wide, overlap=max(height, width) / side < 2.0)
    if labels is None:
        return squares, None, split
    return squares, _split_labels(labels, is_wide), split


def split_labelled(
    frames: torch.Tensor, labels: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, torch.Tensor], SquareSplit | None]:
    """Frames (B, ..., H, W) and named labels (B, ..., H_l, W_l) cut alike by `split_into_squares`.

    Returns (squares, {name: halves}, split); without labels, the frames unchanged, {} and None.
    """
    squares, halves, split = frames, {}, None
    for name, values in labels.items():
        squares, halves[name], split = split_into_squares(frames, values)
    return squares, halves, split


def _split_labels(labels: torch.Tensor, is_wide: bool) -> torch.Tensor:
    dim = -1 if is_wide else -2
    length = labels.shape[dim]
    first, second = labels.split([length // 2, length - length // 2], dim=dim)
    if first.shape != second.shape:
        fill = IGNORE_INDEX if not labels.is_floating_point() else 0
        pad = [0, 1, 0, 0] if is_wide else [0, 0, 0, 1]
        first = F.pad(first, pad, value=fill)
    return torch.cat([first, second], dim=0)
