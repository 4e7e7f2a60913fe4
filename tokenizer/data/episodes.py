"""Clips cut from episodes recorded by `python -m envs.recording` (frames, actions, timestamps)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from tokenizer.data.sampling import UNBOUNDED_CLIPS
from tokenizer.data.transforms import resize_frames
from tokenizer.runtime.errors import DataError
from tokenizer.runtime.files import load_weights

EPISODE_GLOB = "episode_*.safetensors"


def episode_path(root: str | Path, index: int) -> Path:
    """Where the recorder writes episode `index` of a folder; `EPISODE_GLOB` finds them all."""
    return Path(root) / f"episode_{index:06d}.safetensors"


def episode_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"episode folder {root} does not exist; record one with `python -m envs.recording --out {root}`"
        )
    files = sorted(root.glob(EPISODE_GLOB))
    if not files:
        raise DataError(
            f"{root} holds no {EPISODE_GLOB} files; record some with `python -m envs.recording --out {root}`"
        )
    return files


def episode_length(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return f.get_slice("timestamps").get_shape()[0]


def held_out(files: Sequence[Path]) -> list[Path]:
    """The episodes kept out of training for validation and evaluation: every tenth (at least one, the last)."""
    return [p for i, p in enumerate(files) if i % 10 == 9] or list(files[-1:])


class EpisodeClips(torch.utils.data.Dataset):
    """Clips of `num_frames` consecutive frames cut from recorded episodes, resized to `frame_size`.

    Every tenth episode (at least one, when there are two or more) is held out for
    validation. "train" is unbounded and clip id i is a window drawn from
    (seed, i); the validation set is the first window of each held-out episode,
    then the next windows, up to `num_clips`. Clips follow the project's clip dict:
    frames uint8 (T, 3, S, S), timestamps float32 (T,) from 0, actions float32 (T, A)
    where actions[t] leads into frame t (actions[0] is the action into the clip's first frame).
    """

    labels_last_frame_only = False  # no labels at all

    def __init__(
        self,
        root: str | Path,
        num_frames: int,
        frame_size: int,
        seed: int,
        split: str = "train",
        num_clips: int | None = None,
    ):
        files = episode_files(root)
        validation = held_out(files)
        chosen = ([p for p in files if p not in validation] or files) if split == "train" else validation
        lengths = [episode_length(p) for p in chosen]
        self.episodes = [(p, n) for p, n in zip(chosen, lengths) if n >= num_frames]
        if not self.episodes:
            raise DataError(
                f"no {split} episode in {root} has the {num_frames} frames a clip needs (longest: {max(lengths)})"
            )
        self.num_frames, self.frame_size, self.seed, self.train = num_frames, frame_size, seed, split == "train"
        self._split_key = zlib.crc32(split.encode("utf-8"))
        self._windows = None if self.train else self._val_windows(num_clips)
        self._cache: dict[Path, dict[str, torch.Tensor]] = {}

    def _val_windows(self, num_clips: int | None) -> list[tuple[int, int]]:
        windows = [
            (e, start)
            for e, (_, n) in enumerate(self.episodes)
            for start in range(0, n - self.num_frames + 1, self.num_frames)
        ]
        windows.sort(key=lambda w: (w[1], w[0]))
        return windows[:num_clips] if num_clips else windows

    def __len__(self) -> int:
        return UNBOUNDED_CLIPS if self._windows is None else len(self._windows)

    def __getitem__(self, sample_id: int) -> dict[str, torch.Tensor]:
        if sample_id < 0 or sample_id >= len(self):
            raise IndexError(f"clip id {sample_id} is outside [0, {len(self)})")
        if self._windows is None:
            rng = np.random.default_rng([self.seed, self._split_key, int(sample_id)])
            index = int(rng.integers(len(self.episodes)))
            start = int(rng.integers(self.episodes[index][1] - self.num_frames + 1))
        else:
            index, start = self._windows[sample_id]
        episode = self._load(self.episodes[index][0])
        window = slice(start, start + self.num_frames)
        times = episode["timestamps"][window]
        return {
            "frames": resize_frames(episode["frames"][window], self.frame_size, self.frame_size),
            "timestamps": (times - times[0]).float(),
            "actions": episode["actions"][window].float(),
        }

    def _load(self, path: Path) -> dict[str, torch.Tensor]:
        # Episodes are small (a 64-pixel, 100-step episode is 1.2 MB) and re-read for every clip otherwise.
        if path not in self._cache:
            episode = load_weights(path, f"episode file {path}")
            missing = {"frames", "actions", "timestamps"} - set(episode)
            if missing:
                raise DataError(f"episode file {path} lacks {', '.join(sorted(missing))}")
            self._cache[path] = episode
        return self._cache[path]
