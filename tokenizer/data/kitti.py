"""KITTI monocular depth on the Eigen test split, the paper's protocol.

Clips of T frames at 10 fps with 0.2 s (2 frames) between frames, ending on
each Eigen test frame that has depth ground truth and a frame number >= 19
(as in the reference protocol). Frames and depth get the KB crop (bottom 352
rows, centred 1216 columns); depth is the uint16 PNG value / 256 in metres,
kept only inside the Garg crop and within (1e-3, 80) m, 0 elsewhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from tokenizer.data.config import VideoDataConfig
from tokenizer.data.eval_dataset import EvalSample, FrameSequenceEvalDataset, read_label_png
from tokenizer.data.unusable import UnusableSource

logger = logging.getLogger(__name__)

KITTI_FPS = 10.0
KITTI_STRIDE_S = 0.2
KITTI_FIRST_TARGET_FRAME = 19
KITTI_SPLIT_FILE = Path(__file__).with_name("kitti_eigen_test.txt")
KB_CROP_HEIGHT, KB_CROP_WIDTH = 352, 1216
# Garg crop as fractions of the (KB-cropped) depth map: rows top..bottom, columns left..right.
GARG_TOP, GARG_BOTTOM, GARG_LEFT, GARG_RIGHT = 0.40810811, 0.99189189, 0.03594771, 0.96405229
MIN_DEPTH_M, MAX_DEPTH_M = 1e-3, 80.0
DEPTH_PNG_SCALE = 256.0
KITTI_LAYOUT = (
    "<root>/<date>/<drive>/image_02/data/<frame:010d>.png and "
    "<root>/{train,val}/<drive>/proj_depth/groundtruth/image_02/<frame:010d>.png"
)


def kb_crop(array: np.ndarray) -> np.ndarray:
    """The KB crop of (H, W, ...) -> (352, 1216, ...): bottom rows, centred columns."""
    height, width = array.shape[:2]
    top, left = height - KB_CROP_HEIGHT, (width - KB_CROP_WIDTH) // 2
    return array[top : top + KB_CROP_HEIGHT, left : left + KB_CROP_WIDTH]


def garg_valid_mask(depth: np.ndarray) -> np.ndarray:
    """bool (H, W): inside the Garg crop and within the evaluated depth range."""
    height, width = depth.shape
    inside = np.zeros((height, width), dtype=bool)
    inside[int(GARG_TOP * height) : int(GARG_BOTTOM * height), int(GARG_LEFT * width) : int(GARG_RIGHT * width)] = True
    return inside & (depth > MIN_DEPTH_M) & (depth < MAX_DEPTH_M)


def read_eigen_split(path: Path = KITTI_SPLIT_FILE) -> list[tuple[str, int]]:
    """(drive, frame number) of every Eigen test frame with depth ground truth."""
    entries = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            drive, frame = line.split()
            entries.append((drive, int(frame)))
    return entries


def _depth_dir(root: Path, drive: str) -> Path | None:
    # The depth benchmark files each drive under either its train or its val part.
    for part in ("val", "train"):
        folder = root / part / drive / "proj_depth" / "groundtruth" / "image_02"
        if folder.is_dir():
            return folder
    return None


def kitti_samples(root: Path, num_frames: int) -> list[EvalSample]:
    """One clip per usable Eigen test frame whose image and depth folders exist under `root`."""
    stride = round(KITTI_STRIDE_S * KITTI_FPS)
    entries = [entry for entry in read_eigen_split() if entry[1] >= KITTI_FIRST_TARGET_FRAME]
    samples = []
    for drive, end in entries:
        numbers = list(range(end - (num_frames - 1) * stride, end + 1, stride))
        image_dir = root / drive[:10] / drive / "image_02" / "data"
        depth_dir = _depth_dir(root, drive)
        if numbers[0] < 0 or depth_dir is None or not (image_dir / f"{end:010d}.png").is_file():
            continue
        samples.append(
            EvalSample(
                frames=tuple(image_dir / f"{n:010d}.png" for n in numbers),
                frame_numbers=tuple(numbers),
                labels=tuple(depth_dir / f"{n:010d}.png" for n in numbers),
            )
        )
    if 0 < len(samples) < len(entries):
        logger.warning(
            "KITTI: %d of %d Eigen test clips have no image or depth folder under %s",
            len(entries) - len(samples),
            len(entries),
            root,
        )
    return samples


class KittiDepthDataset(FrameSequenceEvalDataset):
    """KITTI clips with "depth" float32 (T, 352, 1216) in metres, 0 where invalid or missing."""

    name = "KITTI"
    fps = KITTI_FPS
    layout = KITTI_LAYOUT
    labels_last_frame_only = True  # the protocol scores the Eigen test frame each clip ends on

    def __init__(self, root: Path, num_frames: int, frame_size: int, config: VideoDataConfig) -> None:
        super().__init__(kitti_samples(root, num_frames), frame_size, config, root)

    def prepare_frames(self, frames: np.ndarray, sample: EvalSample) -> np.ndarray:
        if frames.shape[1] < KB_CROP_HEIGHT or frames.shape[2] < KB_CROP_WIDTH:
            raise UnusableSource(
                sample.frames[-1], f"image is smaller than the {KB_CROP_WIDTH}x{KB_CROP_HEIGHT} KB crop"
            )
        return np.stack([kb_crop(frame) for frame in frames])

    def load_labels(self, sample: EvalSample, frame_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        depths = []
        for path in sample.labels:
            if path is None or not path.is_file():
                depths.append(np.zeros(frame_shape, dtype=np.float32))
                continue
            raw = read_label_png(path)
            if raw.ndim != 2 or raw.shape[0] < KB_CROP_HEIGHT or raw.shape[1] < KB_CROP_WIDTH:
                raise UnusableSource(
                    path, f"depth map must be single-channel and at least {KB_CROP_WIDTH}x{KB_CROP_HEIGHT}"
                )
            depth = kb_crop(raw.astype(np.float32) / DEPTH_PNG_SCALE)
            depths.append(np.where(garg_valid_mask(depth), depth, 0.0).astype(np.float32))
        return {"depth": torch.from_numpy(np.stack(depths))}
