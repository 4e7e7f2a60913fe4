"""Video files, frame folders and dataset trees made on the spot for tests.

Frames are flat grey levels that encode the frame number, so which frames a clip
holds can be read back from their brightness whatever crop or flip was applied.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image

FPS = 25
NUM_VIDEO_FRAMES = 40
LEVEL_STEP = 6  # grey level per frame number in the test videos


def write_video(path: Path, num_frames: int = NUM_VIDEO_FRAMES, fps: int = FPS) -> Path:
    """A 32x48 video whose frame i is flat grey level i * LEVEL_STEP."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [np.full((32, 48, 3), i * LEVEL_STEP, np.uint8) for i in range(num_frames)]
    codec = {"webm": "libvpx"}.get(path.suffix[1:])  # imageio picks libx264 otherwise, which webm refuses
    imageio.mimwrite(path, frames, fps=fps, macro_block_size=16, **({"codec": codec} if codec else {}))
    return path


def write_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_vspw(root: Path, num_frames: int = 45) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "val.txt").write_text("clip_a\n")
    for i in range(num_frames):
        write_image(root / "data" / "clip_a" / "origin" / f"{i:08d}.jpg", np.full((24, 40, 3), i * 5, np.uint8))
        if i == 13:
            continue  # an unlabelled frame
        mask = np.full((24, 40), i + 1, np.uint8)
        mask[0, :4] = [0, 124, 125, 255]
        write_image(root / "data" / "clip_a" / "mask" / f"{i:08d}.png", mask)


def make_kitti(root: Path) -> None:
    """Odd frames 47..69 of a drive whose Eigen test frames include 51, 57, 63 and 69; no depth for 61."""
    drive = "2011_09_26_drive_0002_sync"
    for n in range(47, 70, 2):
        write_image(
            root / "2011_09_26" / drive / "image_02/data" / f"{n:010d}.png", np.full((375, 1242, 3), n, np.uint8)
        )
        depth = np.full((375, 1242), 10 * 256, np.uint16)
        depth[23 + 300, 13 + 600] = 50 * 256  # inside the Garg crop once the KB crop removes 23 rows, 13 columns
        depth[23 + 301, 13 + 600] = 90 * 256  # beyond the 80 m cap
        depth[23 + 302, 13 + 600] = 0
        if n != 61:
            write_image(root / "val" / drive / "proj_depth/groundtruth/image_02" / f"{n:010d}.png", depth)


def make_cityscapes(root: Path) -> None:
    for n in range(20):
        write_image(
            root / "leftImg8bit_sequence/val/aachen" / f"aachen_000000_{n:06d}_leftImg8bit.png",
            np.full((16, 32, 3), n * 10, np.uint8),
        )
    label_ids = np.zeros((16, 32), np.uint8)
    label_ids[:, :6] = np.array([7, 8, 26, 0, 33, 34])
    write_image(root / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png", label_ids)
    write_image(root / "gtFine/val/aachen/aachen_000000_000010_gtFine_labelIds.png", label_ids)  # too early for a clip
