"""Every clip source a run can name, behind one config section (`data.*`).

This lives in `envs` because it is the one layer that sees all sources: the
Shapes world and recorded Gymnasium episodes (here) and video files and the
paper's datasets (`tokenizer.data`). Every source yields the same clip dicts:
frames uint8 (T, 3, H, W), timestamps (T,), and optionally actions (T, A),
segmentation (T, H, W) and depth (T, H, W).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import Dataset

from envs.shapes import ShapesClips, ShapesConfig
from tokenizer.errors import ConfigError

SOURCES = ("shapes",)


@dataclass
class DataConfig:
    source: str = "shapes"
    num_frames: int = 2  # frames per training clip
    val_num_frames: int = 4  # frames per validation clip
    val_clips: int = 64  # size of the fixed validation set
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    shapes_strides: list[int] = field(default_factory=lambda: [1])  # simulator frames between clip frames, drawn per clip


def build_dataset(cfg: DataConfig, split: str, seed: int, num_frames: int | None = None) -> Dataset:
    """The `split` ("train" or "val") clips of the configured source."""
    if cfg.source not in SOURCES:
        raise ConfigError(f"data.source {cfg.source!r} is not one of {', '.join(SOURCES)}")
    frames = num_frames or (cfg.num_frames if split == "train" else cfg.val_num_frames)
    if frames < 2:
        raise ConfigError(f"clips need at least 2 frames to hold a change, got {frames}")
    num_clips = None if split == "train" else cfg.val_clips
    return ShapesClips(cfg.shapes, frames, seed, split=split, num_clips=num_clips, strides=tuple(cfg.shapes_strides))
