"""Open a path as a clip reader: a folder of frames, or a video file."""

from __future__ import annotations

from pathlib import Path

from tokenizer.data.config import VideoDataConfig
from tokenizer.data.frame_folder import FrameFolderReader
from tokenizer.data.readers import ClipReader
from tokenizer.data.video_file import open_video


def open_source(path: str | Path, config: VideoDataConfig) -> ClipReader:
    """A reader for a video file or a frame folder; failures raise UnusableSource naming `path`."""
    path = Path(path)
    if path.is_dir():
        return FrameFolderReader(path, config.frame_folder_fps)
    return open_video(path, config.video_backend)
