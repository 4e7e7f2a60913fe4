"""The datasets of video folders and the paper's evaluation sets, from a source name, a root, a split and clip options.

Behind the one entry point, `tokenizer.data.registry.build_dataset`, which also serves Shapes and episodes.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from tokenizer.data.cityscapes import CityscapesDataset
from tokenizer.data.clip_dataset import VideoClipDataset
from tokenizer.data.config import VideoDataConfig
from tokenizer.data.discovery import find_clip_sources, find_kinetics_sources
from tokenizer.data.kitti import KittiDepthDataset
from tokenizer.data.vspw import VSPWDataset
from tokenizer.runtime.errors import ConfigError, DataError

VIDEO_SOURCES = ("videos", "kinetics", "vspw", "cityscapes", "kitti")
ROOT_ENV_VARS = {
    "kinetics": "KINETICS_ROOT",
    "vspw": "VSPW_ROOT",
    "cityscapes": "CITYSCAPES_ROOT",
    "kitti": "KITTI_ROOT",
}
TRAIN_SPLIT = "train"
# KITTI has one protocol split, Eigen test; "val" names it too so a uniform
# evaluation config can ask every evaluation set for "val".
KITTI_SPLITS = ("test", "val")


def resolve_root(source: str, root: str | Path | None) -> Path:
    """`root` when given, else the source's environment variable (KINETICS_ROOT, ...)."""
    if root not in (None, ""):
        return Path(root).expanduser()
    variable = ROOT_ENV_VARS.get(source)
    if variable is None:
        raise DataError(f"the {source!r} source needs a root folder; set its root in the config")
    value = os.environ.get(variable, "")
    if not value:
        raise DataError(
            f"no root given for {source!r} and ${variable} is not set; set one of them to the dataset folder"
        )
    return Path(value).expanduser()


def make_video_config(config: VideoDataConfig | None = None, **options: Any) -> VideoDataConfig:
    """`config` (default: VideoDataConfig()) with `options` overriding fields; unknown names raise ConfigError."""
    config = config or VideoDataConfig()
    names = [field.name for field in dataclasses.fields(VideoDataConfig)]
    for key in options:
        if key not in names:
            nearest = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {nearest[0]!r}?" if nearest else ""
            raise ConfigError(f"unknown video data option {key!r}{hint}")
    config = dataclasses.replace(config, **options)
    config.validate()
    return config


def build_video_dataset(
    source: str,
    root: str | Path | None,
    split: str,
    num_frames: int,
    frame_size: int,
    seed: int = 0,
    config: VideoDataConfig | None = None,
    **options: Any,
) -> Dataset:
    """A map-style dataset of clip dicts (see tokenizer.data.clip).

    source "videos": every video file and frame folder under `root`; split "train"
        gives random augmented clips, any other split the centred clip of each video.
    source "kinetics": `<root>/<split>/<class>/<video>` files or frame folders, same
        two modes.
    sources "vspw", "cityscapes" (split: folder/list name, e.g. "val") and "kitti"
        (split "test" or "val", both the Eigen test split): the paper's evaluation
        protocols, `num_frames` = 7 in the paper.
    `root` None or "" reads the source's environment variable. `options` override
    fields of `config` (VideoDataConfig). Training items depend only on (seed, sample id).
    """
    if source not in VIDEO_SOURCES:
        raise ConfigError(f"unknown video source {source!r}; choose one of {', '.join(VIDEO_SOURCES)}")
    if int(num_frames) < 1 or int(frame_size) < 1 or int(seed) < 0:
        raise ConfigError(
            f"need num_frames >= 1, frame_size >= 1 and seed >= 0, not {num_frames}, {frame_size} and {seed}"
        )
    config = make_video_config(config, **options)
    path = resolve_root(source, root)
    if not path.is_dir():
        raise DataError(f"{source} root {path} does not exist or is not a folder")
    if source in ("videos", "kinetics"):
        sources = (
            find_clip_sources(path)
            if source == "videos"
            else find_kinetics_sources(path, split, config.kinetics_exclude)
        )
        return VideoClipDataset(
            sources, num_frames, frame_size, seed, config, train=split == TRAIN_SPLIT, root=str(path)
        )
    if source == "vspw":
        return VSPWDataset(path, split, num_frames, frame_size, config)
    if source == "cityscapes":
        return CityscapesDataset(path, split, num_frames, frame_size, config)
    if split not in KITTI_SPLITS:
        raise ConfigError(f"KITTI split must be one of {', '.join(KITTI_SPLITS)} (the Eigen test split), not {split!r}")
    return KittiDepthDataset(path, num_frames, frame_size, config)
