"""Frame folders: a video stored as one image file per frame.

Frame times, first rule that applies:
1. every file name ends in `_<seconds>` with a decimal point, e.g. `frame_0.040.jpg`
   (the layout of the reference implementation's extracted Kinetics frames):
   those seconds, frames ordered by them;
2. the folder holds `fps.txt` with one number: frame i (in natural name order,
   so `frame_9` comes before `frame_10`) is at i / fps;
3. otherwise i / `frame_folder_fps` from the config (default 25).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from tokenizer.data.readers import stack_frames
from tokenizer.data.unusable import UnusableSource

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
FPS_FILE = "fps.txt"

_SECONDS_IN_NAME = re.compile(r"_(\d+\.\d+)$")
_DIGITS = re.compile(r"(\d+)")


def is_image_name(name: str) -> bool:
    # "._name" files are macOS metadata that some archives carry along.
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value: frame_9 < frame_10."""
    return tuple(int(part) if part.isdigit() else part for part in _DIGITS.split(name))


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB; an unreadable file raises UnusableSource."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:
        raise UnusableSource(path, f"cannot read the image ({err})") from None


class FrameFolderReader:
    """Reads chosen frames of a frame folder, opening only their files."""

    def __init__(self, path: Path, default_fps: float) -> None:
        self.path = path
        try:
            names = [entry.name for entry in os.scandir(path) if entry.is_file() and is_image_name(entry.name)]
        except OSError as err:
            raise UnusableSource(path, f"cannot list the folder ({err})") from None
        if not names:
            raise UnusableSource(path, "the folder holds no .jpg/.jpeg/.png frames")
        seconds = [_SECONDS_IN_NAME.search(os.path.splitext(name)[0]) for name in names]
        if all(seconds):
            order = sorted(range(len(names)), key=lambda i: float(seconds[i].group(1)))
            self.timestamps = np.array([float(seconds[i].group(1)) for i in order], dtype=np.float64)
            self.files = [path / names[i] for i in order]
            if np.any(np.diff(self.timestamps) <= 0):
                raise UnusableSource(path, "two frames carry the same timestamp in their names")
        else:
            fps = self._read_fps(default_fps)
            self.files = [path / name for name in sorted(names, key=natural_key)]
            self.timestamps = np.arange(len(self.files), dtype=np.float64) / fps

    def _read_fps(self, default_fps: float) -> float:
        fps_file = self.path / FPS_FILE
        if not fps_file.is_file():
            return default_fps
        try:
            fps = float(fps_file.read_text().strip())
        except (OSError, ValueError):
            fps = 0.0
        if not (math.isfinite(fps) and fps > 0):
            raise UnusableSource(fps_file, "it must hold one positive number, the frame rate")
        return fps

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at `indices` as uint8 (T, H, W, 3)."""
        return stack_frames(self.path, [read_rgb(self.files[i]) for i in indices])
