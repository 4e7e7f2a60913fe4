"""Clips from plain videos (the `videos` and `kinetics` sources).

`dataset[sample_id]` is a deterministic function of (seed, sample_id): the
source, frames, crop and flip all come from generators seeded with them, so a
resumed run that hands out the same ids sees the same clips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from tokenizer.data.clip import make_clip
from tokenizer.data.config import VideoDataConfig
from tokenizer.data.readers import read_planned
from tokenizer.data.sampling import UNBOUNDED_CLIPS, centered_clip_indices, random_clip_indices
from tokenizer.data.sources import open_source
from tokenizer.data.transforms import center_square_box, random_resized_crop_box, resize_frames, to_channels_first
from tokenizer.data.unusable import UnusableSource, warn_unusable
from tokenizer.runtime.errors import DataError, InputError


class VideoClipDataset(Dataset):
    """Square clips of `num_frames` frames from video files and frame folders.

    train=True: each item picks a random source, random gaps between frames,
    a random resized crop and a random flip; any int sample_id >= 0 is valid,
    so the set is unbounded (len UNBOUNDED_CLIPS) like every training set: a
    pool or a token cache of more clips than there are videos draws more windows.
    train=False: item i is the clip centred in source i with `eval_stride_s`
    between frames, centre-cropped to a square; ids are 0..len-1.

    Items are clip dicts (see tokenizer.data.clip): frames uint8
    (num_frames, 3, frame_size, frame_size), timestamps float32 (num_frames,).
    """

    labels_last_frame_only = False  # no labels at all

    def __init__(
        self,
        sources: Sequence[str],
        num_frames: int,
        frame_size: int,
        seed: int,
        config: VideoDataConfig,
        train: bool,
        root: str,
    ) -> None:
        self.sources = list(sources)
        self.num_frames = num_frames
        self.frame_size = frame_size
        self.seed = seed
        self.config = config
        self.train = train
        self.root = root
        # Sources found unusable in this process; skipped without reopening them.
        self._unusable: set[str] = set()

    def __len__(self) -> int:
        return UNBOUNDED_CLIPS if self.train else len(self.sources)

    def __getitem__(self, sample_id: int) -> dict[str, torch.Tensor]:
        sample_id = int(sample_id)
        if sample_id < 0:
            raise InputError(f"sample_id must be >= 0, not {sample_id}")
        if not self.train and sample_id >= len(self.sources):
            raise IndexError(f"sample_id {sample_id} is past the {len(self.sources)} evaluation clips")
        pick_rng = np.random.default_rng([self.seed, sample_id])
        attempts = self.config.max_attempts if self.train else min(self.config.max_attempts, len(self.sources))
        skipped = 0
        for attempt in range(attempts):
            if len(self._unusable) == len(self.sources):
                break
            if self.train:
                source = self.sources[int(pick_rng.integers(len(self.sources)))]
            else:
                source = self.sources[(sample_id + attempt) % len(self.sources)]
            if source in self._unusable:
                skipped += 1
                continue
            # A generator per attempt keeps the result independent of whether an
            # earlier attempt failed fresh or was skipped from the cache.
            clip_rng = np.random.default_rng([self.seed, sample_id, attempt])
            try:
                frames, timestamps = self._load(source, clip_rng)
            except UnusableSource as err:
                warn_unusable(err)
                self._unusable.add(source)
                skipped += 1
                continue
            return make_clip(frames, timestamps, skipped)
        if len(self._unusable) == len(self.sources):
            raise DataError(
                f"all {len(self.sources)} videos under {self.root} are unreadable or shorter than "
                f"{self.num_frames} frames; the warnings above name them"
            )
        raise DataError(
            f"{attempts} clips tried in a row for item {sample_id} under {self.root} were unreadable; "
            f"the warnings above name the files"
        )

    def _load(self, source: str, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """Frames uint8 (T, 3, S, S) and timestamps (T,) seconds of one clip of `source`."""
        config = self.config
        reader = open_source(source, config)

        def plan(timestamps: np.ndarray) -> np.ndarray:
            if len(timestamps) < self.num_frames:
                raise UnusableSource(
                    source, f"it has {len(timestamps)} frames, fewer than a {self.num_frames}-frame clip"
                )
            if self.train:
                return random_clip_indices(timestamps, self.num_frames, config.min_stride_s, config.max_stride_s, rng)
            return centered_clip_indices(timestamps, self.num_frames, config.eval_stride_s)

        frames, timestamps = read_planned(reader, plan)
        height, width = frames.shape[1:3]
        if self.train:
            scale = (config.crop_scale_min, config.crop_scale_max)
            top, left, crop_h, crop_w = random_resized_crop_box(height, width, scale, config.crop_ratio_jitter, rng)
        else:
            top, left, crop_h, crop_w = center_square_box(height, width)
        crop = to_channels_first(frames[:, top : top + crop_h, left : left + crop_w])
        out = resize_frames(crop, self.frame_size, self.frame_size)
        if self.train and config.horizontal_flip and rng.random() < 0.5:
            out = out.flip(-1)
        return out, timestamps
