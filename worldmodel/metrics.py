"""Streaming evaluation metrics for the task heads: segmentation mIoU and depth RMSE.

Both accumulate sufficient statistics over any number of `update` calls and
reduce once in `compute`, so a score over a dataset does not depend on how it
was batched (matching the torchmetrics objects the paper logs).
"""

from __future__ import annotations

import math

import torch

from tokenizer.data.clip import IGNORE_INDEX
from tokenizer.runtime.errors import InputError


class MeanIoU:
    """Mean intersection-over-union of class labels, from a confusion matrix accumulated over a stream.

    Matches torchmetrics' MulticlassJaccardIndex(average="macro", ignore_index=255)
    as of torchmetrics 1.8 (the version the paper pins): pixels whose target is
    `ignore_index` are dropped before counting; a class that appears in neither the
    targets nor the predictions of the whole stream has IoU 0/0 and is left out of
    the mean (weight 0), rather than counting as 0 or 1; a class present in only one
    of them counts with IoU 0. An `ignore_index` inside [0, num_classes) is also left
    out of the mean. With no valid pixel at all, compute() returns NaN.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = IGNORE_INDEX):
        if num_classes < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        # Rows are target classes, columns predicted classes.
        self.confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred: class ids (B, H, W) or scores (B, C, H, W) (argmax over C); target: class ids (B, H, W).

        Returns each item's intersection and union per class, (B, 2, C) long: summed over any items, `mean_iou`
        of them is this metric over those items alone (what a bootstrap over clips resamples)."""
        if target.is_floating_point() or target.is_complex():
            raise InputError(f"segmentation targets must be integer class ids, got {target.dtype}")
        if pred.ndim == target.ndim + 1:
            if pred.shape[1] != self.num_classes or pred.shape[:1] + pred.shape[2:] != target.shape:
                raise InputError(
                    f"scores {tuple(pred.shape)} must be (B, {self.num_classes}, H, W) for targets "
                    f"{tuple(target.shape)}"
                )
            pred = pred.argmax(1)
        elif pred.is_floating_point():
            raise InputError(
                f"predicted labels must be integer class ids (or scores with a class dim), got {pred.dtype}"
            )
        if pred.shape != target.shape:
            raise InputError(f"predictions {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape")

        items = len(target)
        item = torch.arange(items, device=target.device).repeat_interleave(target[0].numel())
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).long().to(target.device)
        if self.ignore_index is not None:
            keep = target != self.ignore_index
            target, pred, item = target[keep], pred[keep], item[keep]
        for name, ids in (("target", target), ("predicted", pred)):
            if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_classes):
                raise InputError(
                    f"{name} class ids must lie in [0, {self.num_classes}) (or be {self.ignore_index} to ignore), "
                    f"got values in [{ids.min().item()}, {ids.max().item()}]"
                )
        c = self.num_classes
        # One confusion matrix per item: the stream's is their sum, and the items' own give intervals over them.
        per_item = torch.bincount((item * c + target) * c + pred, minlength=items * c * c).reshape(items, c, c).cpu()
        self.confusion += per_item.sum(0)
        intersection = per_item.diagonal(dim1=1, dim2=2)
        return torch.stack([intersection, per_item.sum(1) + per_item.sum(2) - intersection], dim=1)

    def iou_per_class(self) -> torch.Tensor:
        """IoU of each class (C,) float64; NaN where the class was never targeted nor predicted."""
        confusion = self.confusion.double()
        intersection = confusion.diagonal()
        return _iou(intersection, confusion.sum(0) + confusion.sum(1) - intersection)

    def compute(self) -> float:
        iou = self.iou_per_class()
        if self.ignore_index is not None and 0 <= self.ignore_index < self.num_classes:
            iou[self.ignore_index] = math.nan
        present = ~iou.isnan()
        return iou[present].mean().item() if present.any() else math.nan


def _iou(intersection: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    intersection, union = intersection.double(), union.double()
    return torch.where(union > 0, intersection / union, torch.full_like(union, math.nan))


def mean_iou(intersection: torch.Tensor, union: torch.Tensor, ignore_index: int | None = IGNORE_INDEX) -> torch.Tensor:
    """`MeanIoU.compute`'s mean from intersection and union counts per class, (..., C) each -> (...) float64, many
    sets of counts at once (bootstrap resamples): classes with an empty union (and an `ignore_index` inside [0, C))
    are left out of the mean; NaN where none is left. (compute keeps its own one-row form so reported figures stay
    bit for bit what they were; the two agree to rounding.)"""
    iou = _iou(intersection, union)
    if ignore_index is not None and 0 <= ignore_index < iou.shape[-1]:
        iou[..., ignore_index] = math.nan
    return iou.nanmean(dim=-1)


class DepthRMSE:
    """Root mean squared depth error over every valid pixel of a stream (metres).

    Pixels count when target > 0 (0 marks no measurement: the KITTI reader zeroes depth outside the
    Garg crop and the evaluated range); errors are pooled over pixels, not averaged per image, as
    torchmetrics' MeanSquaredError(squared=False) does on the valid values. NaN before any valid pixel.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        # float64 so long streams of small squared errors do not lose precision.
        self.sum_squared_error = 0.0
        self.count = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred (B, H, W) or (B, 1, H, W); target (B, H, W). Returns each item's squared error sum and valid pixel
        count, (B, 2) float64: the RMSE over any items is sqrt(their summed errors / their summed counts)."""
        if pred.ndim == target.ndim + 1 and pred.shape[1] == 1:
            pred = pred.squeeze(1)
        if pred.shape != target.shape:
            raise InputError(f"depth predictions {tuple(pred.shape)} and targets {tuple(target.shape)} differ in shape")
        valid = target > 0
        squared = (pred.to(target.device).double() - target.double()).pow(2)
        # Summed over the whole batch as before (not from the items' sums), so the stream's RMSE stays bit for bit.
        self.sum_squared_error += squared[valid].sum().item()
        self.count += int(valid.sum().item())
        per_item = torch.stack([torch.where(valid, squared, 0).flatten(1).sum(1), valid.flatten(1).sum(1).double()], 1)
        return per_item.cpu()

    def compute(self) -> float:
        return math.sqrt(self.sum_squared_error / self.count) if self.count else math.nan
