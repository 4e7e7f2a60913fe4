"""VSPW video semantic segmentation, the paper's protocol.

Frames at 15 fps, clips of T frames 0.2 s (3 frames) apart ending on every
20th frame of a video (0-based frames 19, 39, ...); every frame of a clip is
labelled. Mask PNG value v in 1..124 is class v - 1; 0 and values above 124
(the 255 border) are ignored.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from tokenizer.data.clip import IGNORE_INDEX
from tokenizer.data.config import VideoDataConfig
from tokenizer.data.eval_dataset import EvalSample, FrameSequenceEvalDataset, read_label_png
from tokenizer.data.frame_folder import natural_key
from tokenizer.data.unusable import UnusableSource
from tokenizer.runtime.errors import DataError

logger = logging.getLogger(__name__)

VSPW_FPS = 15.0
VSPW_STRIDE_S = 0.2
VSPW_CLIP_END_EVERY = 20
VSPW_NUM_CLASSES = 124
VSPW_LAYOUT = (
    "<root>/<split>.txt naming one video per line, <root>/data/<video>/origin/<frame>.jpg and "
    "<root>/data/<video>/mask/<frame>.png"
)


def vspw_to_class_ids(mask: np.ndarray) -> np.ndarray:
    """Raw mask values (H, W) -> int64 class ids in 0..123, IGNORE_INDEX elsewhere."""
    ids = mask.astype(np.int64) - 1
    ids[(ids < 0) | (ids >= VSPW_NUM_CLASSES)] = IGNORE_INDEX
    return ids


def vspw_samples(root: Path, split: str, num_frames: int) -> list[EvalSample]:
    """The protocol's clips of every video listed in `<root>/<split>.txt`."""
    split_file = root / f"{split}.txt"
    if not split_file.is_file():
        raise DataError(f"VSPW root {root} has no {split}.txt; expected {VSPW_LAYOUT}")
    videos = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
    stride = round(VSPW_STRIDE_S * VSPW_FPS)
    samples, missing = [], 0
    for video in videos:
        video_dir = root / "data" / video
        origin = video_dir / "origin"
        # "._" files are macOS metadata shipped inside the VSPW archive.
        frames = sorted(
            (path for path in origin.glob("*.jpg") if not path.name.startswith("._")),
            key=lambda path: natural_key(path.name),
        )
        if not frames:
            missing += 1
            continue
        for end in range(VSPW_CLIP_END_EVERY - 1, len(frames), VSPW_CLIP_END_EVERY):
            numbers = list(range(end - (num_frames - 1) * stride, end + 1, stride))
            if numbers[0] < 0:
                continue
            samples.append(
                EvalSample(
                    frames=tuple(frames[i] for i in numbers),
                    frame_numbers=tuple(numbers),
                    labels=tuple(video_dir / "mask" / f"{frames[i].stem}.png" for i in numbers),
                )
            )
    if missing:
        logger.warning(
            "VSPW: %d of %d videos in %s have no frames under %s/data/<video>/origin",
            missing,
            len(videos),
            split_file,
            root,
        )
    return samples


class VSPWDataset(FrameSequenceEvalDataset):
    """VSPW clips with "segmentation" int64 (T, H, W) at the source resolution."""

    name = "VSPW"
    fps = VSPW_FPS
    layout = VSPW_LAYOUT

    def __init__(self, root: Path, split: str, num_frames: int, frame_size: int, config: VideoDataConfig) -> None:
        super().__init__(vspw_samples(root, split, num_frames), frame_size, config, root)

    def load_labels(self, sample: EvalSample, frame_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        masks = []
        for path in sample.labels:
            if path is None or not path.is_file():
                masks.append(np.full(frame_shape, IGNORE_INDEX, dtype=np.int64))
                continue
            mask = read_label_png(path)
            if mask.shape != frame_shape:
                raise UnusableSource(
                    path, f"mask is {mask.shape[1]}x{mask.shape[0]} but its frame is {frame_shape[1]}x{frame_shape[0]}"
                )
            masks.append(vspw_to_class_ids(mask))
        return {"segmentation": torch.from_numpy(np.stack(masks))}
