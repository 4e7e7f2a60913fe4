"""Fitting and scoring task heads on a dataset of labelled clips, through a tokenizer's frozen backbone.

An RGB head (features -> pixels) needs no labels: its target is the frame itself,
so it can be fitted for any tokenizer on any clips.

Rectangular frames are cut into two squares as the evaluation readers prescribe
(`tokenizer.data.squares`), so the heads see the same inputs in training and in
the rollout evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from tokenizer.data.squares import split_into_squares
from tokenizer.model import Tokenizer
from tokenizer.runtime.errors import ConfigError
from worldmodel.evaluation import MethodScores, head_maps
from worldmodel.heads import DEPTH_KEY, FRAMES_KEY, SEG_KEY, SPLIT_KEY, TaskHeads, pixel_target, train_heads
from worldmodel.rgb_head import RGBHead, RGBHeadConfig


@dataclass
class HeadTrainConfig:
    """Which heads train_heads.py fits on the frozen backbone's features, and how."""

    segmentation: bool = True  # train the linear segmentation probe
    depth: bool = True  # train the linear depth probe (binned, as the released depth-head-kitti)
    num_classes: int = 0  # 0 = the data source's own class count
    min_depth: float = 1e-3  # depth head range in metres (KITTI's by default)
    max_depth: float = 80.0  # upper end of the depth range in metres
    steps: int = 300  # AdamW steps
    batch_size: int = 16  # clips per step
    lr: float = 1e-3  # the probes' learning rate
    threads: int = 0  # torch CPU threads; 0 = PyTorch's default
    # An RGB head (a ViT decoder from features to pixels, trained with an L1 pixel loss); its native image
    # size is the training frames' short side, and its patch the backbone's unless set.
    rgb: bool = False
    rgb_hidden_size: int = 128  # the RGB head's width
    rgb_num_layers: int = 2  # its transformer blocks
    rgb_num_heads: int = 4  # its attention heads
    rgb_mlp_size: int = 256  # its MLP hidden size
    rgb_patch_size: int = 0  # 0 = the backbone's patch size: one output patch per feature patch, frames' size out
    rgb_lr: float = 1e-3  # the RGB head's learning rate


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
    """Heads on `tokenizer`'s backbone features of `dataset`'s clips; returns (heads, per-step log)."""
    if not options.segmentation and not options.depth and not options.rgb:
        raise ConfigError("heads.segmentation, heads.depth and heads.rgb are all false: nothing to train")
    if options.segmentation and not num_classes:
        raise ConfigError("a segmentation head needs heads.num_classes for this data source")
    ids = _training_ids(len(dataset), options.steps * options.batch_size, seed)
    batches = [ids[i : i + options.batch_size] for i in range(0, len(ids), options.batch_size)]
    loader = DataLoader(dataset, batch_sampler=batches)
    rgb_head = _new_rgb_head(tokenizer, dataset, options, seed) if options.rgb else None
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
        rgb_head=rgb_head,
        rgb_lr=options.rgb_lr,
    )
    return TaskHeads(seg_head, depth_head, rgb_head), log


def _new_rgb_head(tokenizer: Tokenizer, dataset: Dataset, options: HeadTrainConfig, seed: int) -> RGBHead:
    """An untrained RGB head for `tokenizer`'s features, native at the short side of `dataset`'s first frames."""
    patch = options.rgb_patch_size or tokenizer.backbone.patch_size
    side = min(dataset[0][FRAMES_KEY].shape[-2:])
    if side < patch:
        raise ConfigError(f"heads.rgb_patch_size {patch} is larger than the frames' short side {side}")
    sizes = RGBHeadConfig(
        hidden_size=options.rgb_hidden_size,
        num_layers=options.rgb_num_layers,
        num_heads=options.rgb_num_heads,
        mlp_size=options.rgb_mlp_size,
        patch_size=patch,
        image_size=side // patch * patch,
    )
    # Its own seeded stream: the linear probes draw their initial weights after it, and stay the same
    # whether or not an RGB head is trained beside them.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RGBHead(tokenizer.dim, tokenizer.backbone.feature_norm, sizes)


class PixelScores:
    """Streaming L1 and PSNR of predicted pixels against frames, both over [0, 1] and every pixel of the stream."""

    def __init__(self):
        self.abs_sum, self.sq_sum, self.count = 0.0, 0.0, 0

    def update(self, pixels: torch.Tensor, frames: torch.Tensor) -> None:
        """pixels (M, 3, h, w) float in [0, 1] units (clamped here, as pictures show them), frames (M, 3, H, W) uint8."""
        error = pixels.float().clamp(0, 1) - pixel_target(frames, pixels.shape[-2:])
        self.abs_sum += error.abs().double().sum().item()
        self.sq_sum += error.pow(2).double().sum().item()
        self.count += error.numel()

    def result(self) -> dict[str, float | None]:
        if not self.count:
            return {"rgb_l1": None, "rgb_psnr": None}
        mse = self.sq_sum / self.count
        # Floored so a perfect fit reads 120 dB rather than an infinity JSON cannot hold.
        return {"rgb_l1": self.abs_sum / self.count, "rgb_psnr": 10 * math.log10(1 / max(mse, 1e-12))}


@torch.no_grad()
def score_heads(tokenizer: Tokenizer, heads: TaskHeads, dataset: Dataset, batch_size: int, device: torch.device) -> dict[str, float | None]:
    """mIoU (ignore 255) and depth RMSE (valid pixels) of the heads on true features of every frame of `dataset`,
    and with an RGB head its pixel L1 and PSNR (`rgb_l1`, `rgb_psnr`) against the frames."""
    seg = heads.segmentation.num_classes if heads.segmentation is not None else None
    scores = MethodScores(seg, heads.depth is not None)
    pixels = PixelScores()
    for batch in _square_batches(DataLoader(dataset, batch_size=batch_size)):
        frames = batch[FRAMES_KEY].to(device)
        features = tokenizer.features(frames).flatten(0, 1)
        grid = tokenizer.grid(frames)
        if heads.rgb is not None:
            pixels.update(heads.rgb(features.float(), grid), frames.flatten(0, 1))
        labels = {k: batch[k].to(device).flatten(0, 1) for k in (SEG_KEY, DEPTH_KEY) if k in batch}
        if not labels:
            continue
        size = next(iter(labels.values())).shape[-2:]
        scores.update(head_maps(heads, features, grid, size, batch.get(SPLIT_KEY)), labels, None)
    return {**scores.result(with_loss=False), **(pixels.result() if heads.rgb is not None else {})}
