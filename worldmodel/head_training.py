"""Fitting and scoring task heads on a dataset of labelled clips, through a tokenizer's frozen backbone.

Rectangular frames are cut into two squares as the evaluation readers prescribe
(`tokenizer.data.squares`), so the heads see the same inputs in training and in
the rollout evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from tokenizer.data.squares import split_into_squares
from tokenizer.model import Tokenizer
from tokenizer.runtime.errors import ConfigError
from worldmodel.evaluation import MethodScores, head_maps
from worldmodel.heads import DEPTH_KEY, FRAMES_KEY, SEG_KEY, SPLIT_KEY, TaskHeads, train_heads


@dataclass
class HeadTrainConfig:
    segmentation: bool = True
    depth: bool = True
    num_classes: int = 0  # 0 = the data source's own class count
    min_depth: float = 1e-3  # depth head range in metres (KITTI's by default)
    max_depth: float = 80.0
    steps: int = 300
    batch_size: int = 16
    lr: float = 1e-3
    threads: int = 0  # torch CPU threads; 0 = PyTorch's default


def _square_batches(loader: DataLoader) -> Iterator[dict]:
    """Clip batches with rectangular frames cut into squares and labels into matching halves."""
    for batch in loader:
        out = {}
        for key in (SEG_KEY, DEPTH_KEY):
            if key in batch:
                out[FRAMES_KEY], out[key], split = split_into_squares(batch[FRAMES_KEY], batch[key])
                out[SPLIT_KEY] = split
        if FRAMES_KEY not in out:
            out[FRAMES_KEY] = batch[FRAMES_KEY]
        yield out


def _training_ids(length: int, count: int, seed: int) -> list[int]:
    """`count` clip ids: 0..count-1 when the set is that large (Shapes is unbounded), else seeded shuffled passes."""
    if length >= count:
        return list(range(count))
    generator = torch.Generator().manual_seed(seed)
    passes = [torch.randperm(length, generator=generator) for _ in range(-(-count // length))]
    return torch.cat(passes)[:count].tolist()


def fit_heads(
    tokenizer: Tokenizer,
    dataset: Dataset,
    num_classes: int | None,
    options: HeadTrainConfig,
    seed: int,
    device: torch.device,
    class_names: list[str] | None = None,
) -> tuple[TaskHeads, list[dict[str, float]]]:
    """Linear-probe heads on `tokenizer`'s backbone features of `dataset`'s clips; returns (heads, per-step log)."""
    if not options.segmentation and not options.depth:
        raise ConfigError("heads.segmentation and heads.depth are both false: nothing to train")
    if options.segmentation and not num_classes:
        raise ConfigError("a segmentation head needs heads.num_classes for this data source")
    ids = _training_ids(len(dataset), options.steps * options.batch_size, seed)
    batches = [ids[i : i + options.batch_size] for i in range(0, len(ids), options.batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches)
    seg_head, depth_head, log = train_heads(
        tokenizer.features,
        _square_batches(loader),
        tokenizer.grid,
        num_classes=num_classes if options.segmentation else None,
        min_depth=options.min_depth if options.depth else None,
        max_depth=options.max_depth if options.depth else None,
        steps=options.steps,
        lr=options.lr,
        device=device,
        class_names=class_names,
    )
    return TaskHeads(seg_head, depth_head), log


@torch.no_grad()
def score_heads(tokenizer: Tokenizer, heads: TaskHeads, dataset: Dataset, batch_size: int, device: torch.device) -> dict[str, float | None]:
    """mIoU (ignore 255) and depth RMSE (valid pixels) of the heads on true features of every frame of `dataset`."""
    seg = heads.segmentation.num_classes if heads.segmentation is not None else None
    scores = MethodScores(seg, heads.depth is not None)
    for batch in _square_batches(DataLoader(dataset, batch_size=batch_size)):
        frames = batch[FRAMES_KEY].to(device)
        features = tokenizer.features(frames).flatten(0, 1)
        labels = {k: batch[k].to(device).flatten(0, 1) for k in (SEG_KEY, DEPTH_KEY) if k in batch}
        if not labels:
            continue
        size = next(iter(labels.values())).shape[-2:]
        scores.update(head_maps(heads, features, tokenizer.grid(frames), size, batch.get(SPLIT_KEY)), labels, None)
    return scores.result(with_loss=False)
