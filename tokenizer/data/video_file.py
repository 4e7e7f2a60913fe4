"""Video files (mp4, webm, avi, mkv, mov, ...) read through PyAV or imageio's ffmpeg plugin.

Only the wanted frames are kept in memory. PyAV seeks to the key frame before
the first wanted frame and gives each frame's true presentation time; it is
used whenever it is installed. The fallback through imageio-ffmpeg's bundled
ffmpeg binary decodes from the first frame up to the last wanted one (exact in
every container, slower for clips late in long videos) and assumes a constant
frame rate: frame i at i / fps.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from tokenizer.data.config import VIDEO_BACKENDS
from tokenizer.data.readers import ClipReader, FramesPastEnd, stack_frames
from tokenizer.data.unusable import UnusableSource
from tokenizer.runtime.errors import ConfigError

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".webm", ".avi", ".mkv", ".mov"})

# What the ffmpeg subprocess wrapper raises for unreadable input.
_FFMPEG_ERRORS = (OSError, RuntimeError, ValueError, IndexError, KeyError)


@functools.lru_cache(maxsize=1)
def pyav_available() -> bool:
    return importlib.util.find_spec("av") is not None


def open_video(path: Path, backend: str) -> ClipReader:
    """A reader for the video file at `path` using `backend` ("auto", "pyav" or "ffmpeg")."""
    if backend not in VIDEO_BACKENDS:
        raise ConfigError(f"video_backend must be one of {', '.join(VIDEO_BACKENDS)}, not {backend!r}")
    if backend == "pyav" and not pyav_available():
        raise ConfigError("video_backend is 'pyav' but PyAV is not installed; pip install av or use 'ffmpeg'")
    if backend == "pyav" or (backend == "auto" and pyav_available()):
        return PyAVVideoReader(path)
    return FfmpegVideoReader(path)


@functools.lru_cache(maxsize=4096)
def _ffmpeg_header(path: str, mtime_ns: int, size: int) -> dict:
    """ffmpeg's parsed header of a file; the stat fields in the key invalidate a rewritten file."""
    frames = imageio_ffmpeg.read_frames(path)
    try:
        return next(frames)
    finally:
        frames.close()


class FfmpegVideoReader:
    """Reads a video through imageio-ffmpeg's bundled ffmpeg binary, one subprocess per clip (after the header
    probe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            stat = os.stat(path)
            header = _ffmpeg_header(str(path), stat.st_mtime_ns, stat.st_size)
        except _FFMPEG_ERRORS as err:
            raise UnusableSource(path, f"ffmpeg cannot open it ({_first_line(err)})") from None
        if "size" not in header:
            raise UnusableSource(path, "ffmpeg finds no video stream in it")
        self.width, self.height = header["size"]
        self.fps = float(header.get("fps") or 0.0)
        if not math.isfinite(self.fps) or self.fps <= 0:
            raise UnusableSource(path, "ffmpeg reports no frame rate for its video stream")
        duration = header.get("duration")
        if duration is None or not math.isfinite(duration) or duration <= 0:
            num_frames = self._count_frames()
        else:
            # The container's duration can include a longer audio track; read()
            # notices and corrects an overestimate.
            num_frames = int(round(duration * self.fps))
        self.timestamps = np.arange(num_frames, dtype=np.float64) / self.fps

    def _count_frames(self) -> int:
        try:
            return imageio_ffmpeg.count_frames_and_secs(str(self.path))[0]
        except _FFMPEG_ERRORS as err:
            raise UnusableSource(self.path, f"ffmpeg cannot count its frames ({_first_line(err)})") from None

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at strictly increasing `indices` as uint8 (T, H, W, 3)."""
        # Frames are picked by decode order from the start: a time seek (-ss)
        # lands on the wrong frame in files whose first frame is not at time 0
        # (B-frames in AVI, cut streams). ffmpeg drops the unwanted frames itself
        # and stops after the last wanted one, so only the clip crosses the pipe.
        wanted = "+".join(f"eq(n,{int(i)})" for i in indices)
        # One decoder thread: DataLoader workers already keep every core busy.
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-nostdin",
            "-v",
            "error",
            "-threads",
            "1",
            "-i",
            str(self.path),
            "-map",
            "0:v:0",
        ]
        command += ["-vf", f"select='{wanted}'", "-fps_mode", "passthrough", "-frames:v", str(len(indices))]
        command += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        try:
            result = subprocess.run(command, capture_output=True, check=False)
        except OSError as err:
            raise UnusableSource(self.path, f"ffmpeg could not run ({_first_line(err)})") from None
        if result.returncode != 0:
            reason = result.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
            raise UnusableSource(self.path, f"ffmpeg failed while decoding ({reason[-1]})")
        frame_bytes = self.width * self.height * 3
        if len(result.stdout) % frame_bytes:
            raise UnusableSource(self.path, "ffmpeg returned frames of another size than its header announced")
        if len(result.stdout) < frame_bytes * len(indices):
            counted = self._count_frames()
            if counted >= len(self.timestamps):
                got = len(result.stdout) // frame_bytes
                raise UnusableSource(self.path, f"ffmpeg decoded only {got} of {len(indices)} requested frames")
            self.timestamps = self.timestamps[:counted]
            raise FramesPastEnd
        # bytearray: a writable buffer, so torch can share it without a warning.
        return np.frombuffer(bytearray(result.stdout), dtype=np.uint8).reshape(len(indices), self.height, self.width, 3)


class PyAVVideoReader:
    """Reads a video through PyAV; timestamps come from the packets' presentation times."""

    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                pts = sorted({packet.pts for packet in container.demux(stream) if packet.pts is not None})
                time_base = float(stream.time_base)
        except (av.FFmpegError, OSError, ValueError, RuntimeError, IndexError) as err:
            raise UnusableSource(path, f"PyAV cannot open it ({_first_line(err)})") from None
        if not pts:
            raise UnusableSource(path, "its video stream has no timestamped frames")
        self._pts = np.asarray(pts, dtype=np.int64)
        self.timestamps = (self._pts - self._pts[0]) * time_base

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at strictly increasing `indices` as uint8 (T, H, W, 3)."""
        import av

        slot_of_pts = {int(self._pts[i]): slot for slot, i in enumerate(indices)}
        last_pts = int(self._pts[indices[-1]])
        frames: list[np.ndarray | None] = [None] * len(indices)
        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                # backward=True lands on the key frame at or before the first wanted frame.
                container.seek(int(self._pts[indices[0]]), stream=stream, backward=True)
                for frame in container.decode(stream):
                    if frame.pts is None:
                        continue
                    if frame.pts in slot_of_pts:
                        frames[slot_of_pts[frame.pts]] = frame.to_ndarray(format="rgb24")
                    if frame.pts >= last_pts:
                        break
        except (av.FFmpegError, OSError, ValueError, RuntimeError) as err:
            raise UnusableSource(self.path, f"PyAV failed while decoding ({_first_line(err)})") from None
        if any(frame is None for frame in frames):
            raise UnusableSource(self.path, "some of its frames cannot be decoded")
        return stack_frames(self.path, frames)


def _first_line(err: BaseException) -> str:
    """A one-line reason without the file name, which the warning already gives."""
    text = str(err).strip()
    if "=== stderr ===" in text:  # imageio-ffmpeg appends ffmpeg's log; its last line says why
        stderr_lines = [line.strip() for line in text.split("=== stderr ===", 1)[1].splitlines() if line.strip()]
        if stderr_lines:
            return stderr_lines[-1]
    if getattr(err, "strerror", None):  # OSError and PyAV errors
        return err.strerror
    return text.splitlines()[0] if text else type(err).__name__
