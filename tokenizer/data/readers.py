"""One interface over video files and frame folders: per-frame timestamps, then read chosen frames."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from tokenizer.data.unusable import UnusableSource


class FramesPastEnd(Exception):
    """The source holds fewer frames than its header promised; `timestamps` has been corrected."""


class ClipReader(Protocol):
    """A source of frames.

    `timestamps` (N,) float64 holds the presentation time in seconds of every
    frame, strictly increasing; frame i of `read` is the frame at timestamps[i].
    """

    path: Path
    timestamps: np.ndarray

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at strictly increasing `indices`, as uint8 (T, H, W, 3) RGB."""
        ...


def read_planned(reader: ClipReader, plan: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Choose frames with `plan(timestamps) -> indices (T,)` and read them.

    Returns frames uint8 (T, H, W, 3) and their timestamps (T,) seconds. A video
    whose header overstated its length is re-planned once on the corrected
    timestamps, so the result is still a deterministic function of the file.
    """
    indices = plan(reader.timestamps)
    try:
        frames = reader.read(indices)
    except FramesPastEnd:
        indices = plan(reader.timestamps)
        try:
            frames = reader.read(indices)
        except FramesPastEnd:
            raise UnusableSource(reader.path, "frames its header lists cannot be decoded") from None
    return frames, reader.timestamps[indices]


def stack_frames(path: Path, frames: Sequence[np.ndarray]) -> np.ndarray:
    """Stack (H, W, 3) frames into (T, H, W, 3); frames of different sizes make the source unusable."""
    if len({frame.shape for frame in frames}) != 1:
        raise UnusableSource(path, "its frames differ in size")
    return np.stack(frames)
