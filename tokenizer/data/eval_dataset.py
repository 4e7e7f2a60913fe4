"""Shared machinery of the evaluation protocols: fixed clips of frame files with per-frame labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from tokenizer.data.clip import make_clip
from tokenizer.data.config import VideoDataConfig
from tokenizer.data.frame_folder import read_rgb
from tokenizer.data.readers import stack_frames
from tokenizer.data.transforms import eval_resize_shape, resize_frames, to_channels_first
from tokenizer.data.unusable import UnusableSource, warn_unusable
from tokenizer.runtime.errors import DataError


@dataclass(frozen=True)
class EvalSample:
    """One evaluation clip: T frame files, their frame numbers, and T label files (None: unlabelled)."""

    frames: tuple[Path, ...]
    frame_numbers: tuple[int, ...]
    labels: tuple[Path | None, ...]


def read_label_png(path: Path) -> np.ndarray:
    """A label PNG's raw values as (H, W): palette indices, 8-bit ids or 16-bit depth codes."""
    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError) as err:
        raise UnusableSource(path, f"cannot read the label image ({err})") from None


class FrameSequenceEvalDataset(Dataset):
    """Clips of an evaluation protocol; item i is sample i, ids are 0..len-1.

    Frames are resized so the short side is `frame_size` (aspect ratio kept,
    capped at `eval_max_aspect_ratio`); labels keep their own resolution.
    A sample with an unreadable file is replaced by the next one, counted in
    "num_skipped" and warned about, so one bad file does not stop an evaluation.
    Subclasses set `name`, `fps` and `layout` and implement `load_labels`.
    """

    name: str
    fps: float
    layout: str
    # True where the protocol labels only a clip's last frame: evaluation then ends one rollout per horizon there.
    labels_last_frame_only = False

    def __init__(self, samples: list[EvalSample], frame_size: int, config: VideoDataConfig, root: Path) -> None:
        if not samples:
            raise DataError(f"{self.name} root {root} yields no evaluation clips; expected {self.layout}")
        self.samples = samples
        self.frame_size = frame_size
        self.config = config
        self.root = root

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if not 0 <= index < len(self.samples):
            raise IndexError(f"{self.name} has {len(self.samples)} clips; index {index} is out of range")
        attempts = min(self.config.max_attempts, len(self.samples))
        for skipped in range(attempts):
            sample = self.samples[(index + skipped) % len(self.samples)]
            try:
                return self._load(sample, skipped)
            except UnusableSource as err:
                warn_unusable(err)
        raise DataError(
            f"{attempts} {self.name} clips in a row from index {index} under {self.root} have unreadable files; "
            f"the warnings above name them"
        )

    def _load(self, sample: EvalSample, skipped: int) -> dict[str, torch.Tensor]:
        frames = stack_frames(sample.frames[0].parent, [read_rgb(path) for path in sample.frames])
        frames = self.prepare_frames(frames, sample)
        labels = self.load_labels(sample, frames.shape[1:3])
        height, width = eval_resize_shape(*frames.shape[1:3], self.frame_size, self.config.eval_max_aspect_ratio)
        resized = resize_frames(to_channels_first(frames), height, width)
        timestamps = np.asarray(sample.frame_numbers, dtype=np.float64) / self.fps
        return make_clip(resized, timestamps, skipped, **labels)

    def prepare_frames(self, frames: np.ndarray, sample: EvalSample) -> np.ndarray:
        """Protocol-specific cropping of the source frames uint8 (T, H, W, 3); none by default."""
        return frames

    def load_labels(self, sample: EvalSample, frame_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        """{"segmentation": int64 (T, H_l, W_l)} and/or {"depth": float32 (T, H_l, W_l)}."""
        raise NotImplementedError
