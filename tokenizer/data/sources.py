"""Open a path as a clip reader (a folder of frames, or a video file), and read one clip for a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tokenizer.data.config import VideoDataConfig
from tokenizer.data.frame_folder import FrameFolderReader
from tokenizer.data.readers import ClipReader, read_planned
from tokenizer.data.transforms import center_square_box, resize_frames, to_channels_first
from tokenizer.data.unusable import UnusableSource
from tokenizer.data.video_file import open_video
from tokenizer.runtime.errors import InputError


def open_source(path: str | Path, config: VideoDataConfig) -> ClipReader:
    """A reader for a video file or a frame folder; failures raise UnusableSource naming `path`."""
    path = Path(path)
    if path.is_dir():
        return FrameFolderReader(path, config.frame_folder_fps)
    return open_video(path, config.video_backend)


def read_clip(
    path: str | Path,
    num_frames: int,
    frame_size: int,
    stride_s: float = 0.2,
    start_s: float = 0.0,
    config: VideoDataConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip of a video file or frame folder, ready for a tokenizer or world model.

    Takes the frames nearest to start_s, start_s + stride_s, ... (seconds; 0.2 s is the spacing of the
    paper's VSPW and KITTI protocols), crops the largest centred square and resizes it to `frame_size`
    (a multiple of the backbone's patch size). Returns frames uint8 (1, T, 3, S, S) and their
    timestamps (1, T) in seconds from the first.
    """
    if num_frames < 1 or frame_size < 1 or not stride_s > 0 or start_s < 0:
        raise InputError(
            f"need num_frames >= 1, frame_size >= 1, stride_s > 0 and start_s >= 0, got {num_frames}, {frame_size}, "
            f"{stride_s}, {start_s}"
        )
    if not Path(path).exists():
        raise InputError(f"{path} does not exist; give a video file or a folder of frames")
    try:
        frames, times = _read_nearest(path, num_frames, stride_s, start_s, config or VideoDataConfig())
    except UnusableSource as err:
        # UnusableSource says "skipping" as a dataset does; one clip asked for by name is not skipped but refused.
        raise InputError(f"cannot read a clip from {path}: {err.reason}") from None
    top, left, side, _ = center_square_box(*frames.shape[1:3])
    square = to_channels_first(frames[:, top : top + side, left : left + side])
    clip = resize_frames(square, frame_size, frame_size)
    return clip[None], torch.as_tensor(times - times[0], dtype=torch.float32)[None]


def _read_nearest(
    path: str | Path, num_frames: int, stride_s: float, start_s: float, config: VideoDataConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The frames (T, H, W, 3) nearest to start_s, start_s + stride_s, ... and their timestamps (T,)."""
    reader = open_source(path, config)
    wanted = start_s + stride_s * np.arange(num_frames)
    if wanted[-1] > reader.timestamps[-1] + stride_s / 2:
        raise InputError(
            f"{path} lasts {reader.timestamps[-1]:.2f} s: too short for {num_frames} frames {stride_s} s apart from "
            f"{start_s} s"
        )
    indices = np.abs(reader.timestamps[None, :] - wanted[:, None]).argmin(1)
    if len(set(indices.tolist())) < num_frames:
        raise InputError(f"{path} has too few frames per second for frames {stride_s} s apart; pass a larger stride_s")
    return read_planned(reader, lambda timestamps: indices)
