"""Every clip source a run can name, behind one config section (`data.*`).

The synthetic Shapes world, episodes recorded from Gymnasium envs (`python -m envs.recording`),
video files and frame folders, and the paper's datasets. Every source yields the same clip dicts:
frames uint8 (T, 3, H, W), timestamps (T,), and optionally actions (T, A),
segmentation (T, H, W) and depth (T, H, W).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from torch.utils.data import Dataset, Subset

from tokenizer.data.build import SOURCES as VIDEO_SOURCES
from tokenizer.data.build import build_video_dataset
from tokenizer.data.config import VideoDataConfig
from tokenizer.data.episodes import EpisodeClips
from tokenizer.data.shapes import ShapesClips, ShapesConfig
from tokenizer.runtime.errors import ConfigError

SOURCES = ("shapes", "episodes") + VIDEO_SOURCES


@dataclass
class DataConfig:
    """Where training and validation clips come from (tokenizer.data.registry.build_dataset)."""

    # shapes (the embedded default) | episodes (a folder from `python -m envs.recording`, with actions) |
    # videos (any folder tree of video files / frame folders) | kinetics | vspw | cityscapes | kitti |
    # tokens (world-model training only: a cache from `python -m worldmodel.token_cache`, with data.val_source set)
    source: str = "shapes"
    root: str = ""  # dataset folder; "" = the source's variable (KINETICS_ROOT, VSPW_ROOT, ...)
    val_source: str = ""  # validation source; "" = the training source
    val_root: str = ""  # folder of val_source, when that is set; "" = its variable
    val_split: str = "val"  # split validation reads from a dataset folder (shapes and episodes have their own)
    frame_size: int = 64  # square training frames (evaluation sets keep their aspect ratio)
    num_frames: int = 2  # frames per training clip
    val_num_frames: int = 4  # frames per validation clip
    val_clips: int = 64  # validation clips used (Shapes makes exactly this many)
    shapes: ShapesConfig = field(default_factory=ShapesConfig)
    shapes_strides: list[int] = field(default_factory=lambda: [1])  # simulator frames between clip frames, drawn per clip
    video: VideoDataConfig = field(default_factory=VideoDataConfig)


def build_dataset(cfg: DataConfig, split: str, seed: int, num_frames: int | None = None) -> Dataset:
    """The `split` clips of the configured source: "train", or the validation set for any other split."""
    train = split == "train"
    source = cfg.source if train or not cfg.val_source else cfg.val_source
    root = cfg.root if train or not cfg.val_source else cfg.val_root
    if source not in SOURCES:
        raise ConfigError(f"data.source {source!r} is not one of {', '.join(SOURCES)}")
    frames = num_frames or (cfg.num_frames if train else cfg.val_num_frames)
    if frames < 2:
        raise ConfigError(f"clips need at least 2 frames to hold a change, got {frames}")
    if source == "shapes":
        if cfg.shapes.frame_size not in (cfg.frame_size, ShapesConfig.frame_size):
            raise ConfigError("data.shapes.frame_size follows data.frame_size; set data.frame_size instead")
        shapes = dataclasses.replace(cfg.shapes, frame_size=cfg.frame_size)
        return ShapesClips(
            shapes, frames, seed, split="train" if train else "val", num_clips=None if train else cfg.val_clips, strides=tuple(cfg.shapes_strides)
        )
    if source == "episodes":
        if not root:
            raise ConfigError("data.source=episodes needs data.root, the folder written by `python -m envs.recording --out DIR`")
        return EpisodeClips(root, frames, cfg.frame_size, seed, "train" if train else "val", None if train else cfg.val_clips)
    dataset = build_video_dataset(source, root or None, "train" if train else cfg.val_split, frames, cfg.frame_size, seed, cfg.video)
    if not train and len(dataset) > cfg.val_clips:
        dataset = Subset(dataset, range(cfg.val_clips))
    return dataset
