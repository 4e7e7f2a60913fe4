"""The one entry point to clips: `build_dataset(DataConfig, split, seed)` for every source `data.source` names.

The synthetic Shapes world, episodes recorded from Gymnasium envs (`python -m envs.recording`),
video files and frame folders, and the paper's datasets are built here. A package above this one adds
a source of its own with `register_source` when it is imported (`worldmodel` adds `tokens`, a cache of
delta tokens), so this package imports nothing from the models. Every source yields the same clip dicts:
frames uint8 (T, 3, H, W), timestamps (T,), and optionally actions (T, A),
segmentation (T, H, W) and depth (T, H, W); a token cache yields tokens (T, D) in place of frames.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Protocol

from safetensors import safe_open
from torch.utils.data import Dataset, Subset

from tokenizer.data.cityscapes import CITYSCAPES_STRIDE_S, CityscapesDataset
from tokenizer.data.clip_dataset import VideoClipDataset
from tokenizer.data.config import VideoDataConfig
from tokenizer.data.episodes import EpisodeClips, episode_files
from tokenizer.data.kitti import KITTI_STRIDE_S, KittiDepthDataset
from tokenizer.data.shapes import ShapesClips, ShapesConfig
from tokenizer.data.video_datasets import build_video_dataset
from tokenizer.data.vspw import VSPW_STRIDE_S, VSPWDataset
from tokenizer.runtime.devices import check_fits_in_memory
from tokenizer.runtime.errors import ConfigError, DataError


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
    shapes_strides: list[int] = field(
        default_factory=lambda: [1]
    )  # simulator frames between clip frames, drawn per clip
    video: VideoDataConfig = field(default_factory=VideoDataConfig)

    # Other names for these keys, refused with the key to use (one name per thing across commands).
    REFUSED_KEYS: ClassVar[dict[str, str]] = {
        "split": "val_split",
        "num_clips": "val_clips",
        "shapes_stride": "shapes_strides",
    }

    def validate(self) -> None:
        """Raise ConfigError naming the first key whose value cannot work."""
        for key in ("frame_size", "num_frames", "val_num_frames", "val_clips"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key} must be at least 1, got {getattr(self, key)}")
        frames = max(self.num_frames, self.val_num_frames)
        check_fits_in_memory(
            frames * 3 * self.frame_size**2,
            f"one clip of {frames} frames (data.num_frames, data.val_num_frames) of data.frame_size {self.frame_size}",
        )
        if not self.shapes_strides or min(self.shapes_strides) < 1:
            got = list(self.shapes_strides)
            raise ConfigError(f"data.shapes_strides must be a non-empty list of steps of at least 1, got {got}")


@dataclass(frozen=True)
class Source:
    """A clip source `data.source` can name: the dataset class it yields and the function that builds one."""

    # Its class attributes describe the clips to their readers (`labels_last_frame_only`: evaluation's protocol).
    dataset: type[Dataset]
    # (cfg, root, train, num_frames, seed, **context) -> a `dataset`; root "" means the source's own default.
    build: Callable[..., Dataset]
    # (cfg, root, train) -> (shortest, longest) seconds between consecutive frames of its clips (`frame_spacing`).
    spacing: Callable[[DataConfig, str, bool], tuple[float, float]]


class FrameSizeCheck(Protocol):
    """The model clips are built for (tokenizer.model.Tokenizer), as far as build_dataset needs it."""

    def check_frame_size(self, size: int) -> None: ...


def _shapes(cfg: DataConfig, root: str, train: bool, num_frames: int, seed: int, **context: Any) -> ShapesClips:
    if cfg.shapes.frame_size not in (cfg.frame_size, ShapesConfig.frame_size):
        raise ConfigError("data.shapes.frame_size follows data.frame_size; set data.frame_size instead")
    shapes = dataclasses.replace(cfg.shapes, frame_size=cfg.frame_size)
    split, num_clips = ("train", None) if train else ("val", cfg.val_clips)
    return ShapesClips(shapes, num_frames, seed, split=split, num_clips=num_clips, strides=tuple(cfg.shapes_strides))


def _episodes(cfg: DataConfig, root: str, train: bool, num_frames: int, seed: int, **context: Any) -> EpisodeClips:
    if not root:
        raise ConfigError(
            "data.source=episodes needs data.root, the folder written by `python -m envs.recording --out DIR`"
        )
    split, num_clips = ("train", None) if train else ("val", cfg.val_clips)
    return EpisodeClips(root, num_frames, cfg.frame_size, seed, split, num_clips)


def _video(source: str, cfg: DataConfig, root: str, train: bool, num_frames: int, seed: int, **context: Any) -> Dataset:
    split = "train" if train else cfg.val_split
    return build_video_dataset(source, root or None, split, num_frames, cfg.frame_size, seed, cfg.video)


def _shapes_spacing(cfg: DataConfig, root: str, train: bool) -> tuple[float, float]:
    return min(cfg.shapes_strides) / cfg.shapes.fps, max(cfg.shapes_strides) / cfg.shapes.fps


def _episodes_spacing(cfg: DataConfig, root: str, train: bool) -> tuple[float, float]:
    """The recorder times every step alike (the env's dt), so the first episode's timestamps tell every clip's."""
    if not root:
        raise ConfigError("data.source=episodes needs data.root, the folder written by `python -m envs.recording`")
    with safe_open(str(episode_files(root)[0]), framework="pt") as f:
        gaps = f.get_tensor("timestamps").double().diff()
    if not len(gaps):
        raise DataError(f"the first episode of {root} has a single frame: no spacing to read")
    return gaps.min().item(), gaps.max().item()


def _video_spacing(cfg: DataConfig, root: str, train: bool) -> tuple[float, float]:
    video = cfg.video
    return (video.min_stride_s, video.max_stride_s) if train else (video.eval_stride_s, video.eval_stride_s)


def _fixed_spacing(seconds: float) -> Callable[[DataConfig, str, bool], tuple[float, float]]:
    """The paper's evaluation protocols fix the spacing of VSPW, Cityscapes and KITTI clips, in every split."""
    return lambda cfg, root, train: (seconds, seconds)


SOURCES: dict[str, Source] = {
    "shapes": Source(ShapesClips, _shapes, _shapes_spacing),
    "episodes": Source(EpisodeClips, _episodes, _episodes_spacing),
    "videos": Source(VideoClipDataset, partial(_video, "videos"), _video_spacing),
    "kinetics": Source(VideoClipDataset, partial(_video, "kinetics"), _video_spacing),
    "vspw": Source(VSPWDataset, partial(_video, "vspw"), _fixed_spacing(VSPW_STRIDE_S)),
    "cityscapes": Source(CityscapesDataset, partial(_video, "cityscapes"), _fixed_spacing(CITYSCAPES_STRIDE_S)),
    "kitti": Source(KittiDepthDataset, partial(_video, "kitti"), _fixed_spacing(KITTI_STRIDE_S)),
}


def register_source(
    name: str,
    dataset: type[Dataset],
    build: Callable[..., Dataset],
    spacing: Callable[[DataConfig, str, bool], tuple[float, float]],
) -> None:
    """Make `name` a value of data.source, built by `build` into a `dataset` whose frame spacing `spacing` gives
    (see Source)."""
    SOURCES[name] = Source(dataset, build, spacing)


def frame_spacing(cfg: DataConfig, split: str) -> tuple[float, float]:
    """(shortest, longest) seconds between consecutive frames of the clips `build_dataset(cfg, split, ...)` gives,
    as the configuration fixes them (a source drawing gaps from a range gives its ends); no clip is read.

    What a model was trained on: rollout.py sets it beside the spacing of the clips it scores. Raises ConfigError
    or DataError when the configuration cannot say (an unknown source, an episode folder that is gone).
    """
    train = split == "train"
    source = cfg.source if train or not cfg.val_source else cfg.val_source
    root = cfg.root if train or not cfg.val_source else cfg.val_root
    if source not in SOURCES:
        raise ConfigError(f"data.source {source!r} is not one of {', '.join(SOURCES)}")
    return SOURCES[source].spacing(cfg, root, train)


def build_dataset(
    cfg: DataConfig,
    split: str,
    seed: int,
    num_frames: int | None = None,
    tokenizer: FrameSizeCheck | None = None,
    **context: Any,
) -> Dataset:
    """The `split` clips of the configured source: "train", or the validation set for any other split.

    `num_frames` replaces data.num_frames (training) or data.val_num_frames (validation). `tokenizer`, the model
    the clips are for, refuses a data.frame_size its backbone cannot cut into patches before anything is read.
    `context` goes to the source's builder: what a registered source needs beyond the config (worldmodel.token_clips).
    """
    cfg.validate()
    train = split == "train"
    source = cfg.source if train or not cfg.val_source else cfg.val_source
    root = cfg.root if train or not cfg.val_source else cfg.val_root
    if source not in SOURCES:
        raise ConfigError(f"data.source {source!r} is not one of {', '.join(SOURCES)}")
    frames = num_frames or (cfg.num_frames if train else cfg.val_num_frames)
    if frames < 2:
        raise ConfigError(f"clips need at least 2 frames to hold a change, got {frames}")
    if tokenizer is not None:
        tokenizer.check_frame_size(cfg.frame_size)
    dataset = SOURCES[source].build(cfg, root, train, frames, seed, **context)
    if not train and len(dataset) > cfg.val_clips:
        dataset = Subset(dataset, range(cfg.val_clips))
    return dataset
