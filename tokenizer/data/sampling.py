"""Which frames of a source make a clip: random strides for training, a fixed centred clip otherwise."""

from __future__ import annotations

import numpy as np

from tokenizer.runtime.errors import InputError

# `len()` of an unbounded training set (clips drawn by id): large enough never to run out, small
# enough for samplers that keep the length in an int32.
UNBOUNDED_CLIPS = 2**31 - 1


def random_clip_offsets(
    num_frames: int, min_stride_s: float, max_stride_s: float, rng: np.random.Generator
) -> np.ndarray:
    """Target times (T,) in seconds relative to the first frame; each gap drawn uniformly from the range."""
    gaps = rng.uniform(min_stride_s, max_stride_s, size=num_frames - 1)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def random_clip_indices(
    timestamps: np.ndarray,
    num_frames: int,
    min_stride_s: float,
    max_stride_s: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Frame indices (T,) of a clip with random gaps, placed uniformly at random in the source.

    `timestamps` (N,) seconds of every frame of the source, N >= T.
    """
    offsets = random_clip_offsets(num_frames, min_stride_s, max_stride_s, rng)
    offsets = _fit_span(offsets, timestamps)
    slack = timestamps[-1] - timestamps[0] - offsets[-1]
    start = timestamps[0] + rng.uniform(0.0, max(slack, 0.0))
    return snap_to_frames(timestamps, start + offsets)


def centered_clip_indices(timestamps: np.ndarray, num_frames: int, stride_s: float) -> np.ndarray:
    """Frame indices (T,) of the clip with `stride_s` seconds between frames centred in the source."""
    offsets = _fit_span(np.arange(num_frames) * stride_s, timestamps)
    start = (timestamps[0] + timestamps[-1] - offsets[-1]) / 2
    return snap_to_frames(timestamps, start + offsets)


def _fit_span(offsets: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    # A source shorter than the drawn span gets the clip's strides shrunk
    # proportionally rather than frames repeated.
    duration = timestamps[-1] - timestamps[0]
    if offsets[-1] > duration:
        offsets = offsets * (duration / offsets[-1])
    return offsets


def snap_to_frames(timestamps: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Indices (T,) of the frames nearest to `targets` (T,) seconds, made strictly increasing.

    Targets closer together than the frame period would pick one frame twice; those
    are pushed to the following frames (or the preceding ones at the end of the source).
    """
    num_frames, count = len(timestamps), len(targets)
    if num_frames < count:
        raise InputError(f"a {count}-frame clip needs a source of at least {count} frames, not {num_frames}")
    if num_frames == 1:
        return np.zeros(count, dtype=np.int64)
    right = np.clip(np.searchsorted(timestamps, targets), 1, num_frames - 1)
    left = right - 1
    indices = np.where(targets - timestamps[left] <= timestamps[right] - targets, left, right).astype(np.int64)
    for k in range(1, count):
        indices[k] = max(indices[k], indices[k - 1] + 1)
    # The k-th of T frames can be no later than frame N - T + k; a running
    # minimum with that bound keeps the sequence strictly increasing.
    return np.minimum(indices, np.arange(num_frames - count, num_frames))
