"""Cityscapes video semantic segmentation, the paper's protocol.

Clips of T frames from leftImg8bit_sequence, taken as 16 fps with 0.1875 s
(3 frames) between frames, ending on the annotated frame of each 30-frame
snippet. Only that last frame is labelled: gtFine label ids mapped to the 19
training classes, everything else IGNORE_INDEX.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tokenizer.data.clip import IGNORE_INDEX
from tokenizer.data.config import VideoDataConfig
from tokenizer.data.eval_dataset import EvalSample, FrameSequenceEvalDataset, read_label_png
from tokenizer.data.unusable import UnusableSource
from tokenizer.runtime.errors import DataError

CITYSCAPES_FPS = 16.0
CITYSCAPES_STRIDE_S = 0.1875
CITYSCAPES_NUM_CLASSES = 19
CITYSCAPES_LAYOUT = (
    "<root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame:06d>_leftImg8bit.png and "
    "<root>/gtFine/<split>/<city>/<city>_<seq>_<frame:06d>_gtFine_labelIds.png"
)

# Cityscapes label id -> training id (road, sidewalk, building, wall, fence, pole,
# traffic light, traffic sign, vegetation, terrain, sky, person, rider, car,
# truck, bus, train, motorcycle, bicycle); every other id is ignored.
_TRAIN_ID_OF_LABEL_ID = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}
LABEL_ID_TO_TRAIN_ID = np.full(256, IGNORE_INDEX, dtype=np.int64)
for _label_id, _train_id in _TRAIN_ID_OF_LABEL_ID.items():
    LABEL_ID_TO_TRAIN_ID[_label_id] = _train_id

_LABEL_SUFFIX = "_gtFine_labelIds.png"


def cityscapes_samples(root: Path, split: str, num_frames: int) -> list[EvalSample]:
    """One clip per gtFine label of `split`, ending on the labelled frame."""
    frames_dir = root / "leftImg8bit_sequence" / split
    labels_dir = root / "gtFine" / split
    for folder in (frames_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(
                f"Cityscapes root {root} has no {folder.relative_to(root)}/ folder; expected {CITYSCAPES_LAYOUT}"
            )
    stride = round(CITYSCAPES_STRIDE_S * CITYSCAPES_FPS)
    samples = []
    for label in sorted(labels_dir.glob(f"*/*{_LABEL_SUFFIX}")):
        city, sequence, frame = label.name[: -len(_LABEL_SUFFIX)].rsplit("_", 2)
        end = int(frame)
        numbers = list(range(end - (num_frames - 1) * stride, end + 1, stride))
        if numbers[0] < 0:
            continue
        samples.append(
            EvalSample(
                frames=tuple(
                    frames_dir / label.parent.name / f"{city}_{sequence}_{n:06d}_leftImg8bit.png" for n in numbers
                ),
                frame_numbers=tuple(numbers),
                labels=(None,) * (num_frames - 1) + (label,),
            )
        )
    return samples


class CityscapesDataset(FrameSequenceEvalDataset):
    """Cityscapes clips with "segmentation" int64 (T, H, W) at the label resolution, last frame labelled."""

    name = "Cityscapes"
    fps = CITYSCAPES_FPS
    layout = CITYSCAPES_LAYOUT
    labels_last_frame_only = True

    def __init__(self, root: Path, split: str, num_frames: int, frame_size: int, config: VideoDataConfig) -> None:
        super().__init__(cityscapes_samples(root, split, num_frames), frame_size, config, root)

    def load_labels(self, sample: EvalSample, frame_shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        label_ids = read_label_png(sample.labels[-1])
        if label_ids.ndim != 2 or label_ids.dtype != np.uint8:
            raise UnusableSource(sample.labels[-1], "a labelIds image must be single-channel 8-bit")
        segmentation = np.full((len(sample.labels), *label_ids.shape[:2]), IGNORE_INDEX, dtype=np.int64)
        segmentation[-1] = LABEL_ID_TO_TRAIN_ID[label_ids]
        return {"segmentation": torch.from_numpy(segmentation)}
