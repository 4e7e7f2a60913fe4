"""Options of the video data pipeline, as a plain-typed dataclass for an OmegaConf section."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from tokenizer.runtime.errors import ConfigError

VIDEO_BACKENDS = ("auto", "pyav", "ffmpeg")


@dataclass
class VideoDataConfig:
    """Clip sampling, augmentation and reading options shared by every video source.

    The defaults are the paper's Kinetics training recipe: 1/25 s to 1/3 s
    between frames, a random resized crop covering 60-100 % of the frame with
    its aspect ratio jittered by up to 4/3 either way, and horizontal flips.
    """

    # Seconds between consecutive frames of a training clip, drawn uniformly in [min_stride_s, max_stride_s] per gap.
    min_stride_s: float = 1 / 25
    max_stride_s: float = 1 / 3  # the longest gap
    # Seconds between frames of the fixed clips that `videos`/`kinetics` give for non-train splits.
    eval_stride_s: float = 0.2
    # Random resized crop of training clips: the smallest fraction of the frame area kept.
    crop_scale_min: float = 0.6
    crop_scale_max: float = 1.0  # the largest fraction of the frame area kept
    crop_ratio_jitter: float = 4 / 3  # the largest factor by which the crop's aspect ratio may differ from square
    horizontal_flip: bool = True  # flip each training clip left-right with probability 1/2
    # Frame rate of frame folders that carry neither an fps.txt nor timestamps in their file names.
    frame_folder_fps: float = 25.0
    # "auto" uses PyAV when it is installed (exact per-frame timestamps) and imageio's ffmpeg otherwise.
    video_backend: str = "auto"
    # Leave out the Kinetics videos the reference implementation leaves out (kinetics_excluded.txt).
    kinetics_exclude: bool = True
    # Evaluation frames are resized so the short side is `frame_size`, the long side capped at this ratio.
    eval_max_aspect_ratio: float = 2.0
    # Clips tried for one item before giving up with DataError.
    max_attempts: int = 32

    def validate(self) -> None:
        """Raise ConfigError naming the first option whose value cannot work."""
        problems = [
            (0 < self.min_stride_s <= self.max_stride_s, "need 0 < min_stride_s <= max_stride_s"),
            (self.eval_stride_s > 0, "eval_stride_s must be positive"),
            (0 < self.crop_scale_min <= self.crop_scale_max <= 1, "need 0 < crop_scale_min <= crop_scale_max <= 1"),
            (self.crop_ratio_jitter >= 1, "crop_ratio_jitter must be >= 1"),
            (self.frame_folder_fps > 0, "frame_folder_fps must be positive"),
            (self.video_backend in VIDEO_BACKENDS, f"video_backend must be one of {', '.join(VIDEO_BACKENDS)}"),
            (self.eval_max_aspect_ratio >= 1, "eval_max_aspect_ratio must be >= 1"),
            (self.max_attempts >= 1, "max_attempts must be >= 1"),
        ]
        if self.video_backend == "pyav" and importlib.util.find_spec("av") is None:
            problems.append((False, "video_backend is 'pyav' but PyAV is not installed; pip install av or use 'auto'"))
        for ok, message in problems:
            if not ok:
                raise ConfigError(f"video data config: {message}")
