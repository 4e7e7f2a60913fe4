"""Real video data: readers, training clip sampling, the paper's evaluation protocols.

Entry point: `build_dataset(DataConfig, split, seed)` for every source in `SOURCES`
(`build_video_dataset(source, root, split, num_frames, frame_size, seed, **options)` builds the video
sources behind it). Every dataset returns clip dicts (see `tokenizer.data.clip`). This package
depends only on the rest of `tokenizer`, never on worldmodel or envs.
"""

from tokenizer.data.cityscapes import CityscapesDataset
from tokenizer.data.clip import IGNORE_INDEX, make_clip
from tokenizer.data.clip_dataset import VideoClipDataset
from tokenizer.data.config import VideoDataConfig
from tokenizer.data.kitti import KittiDepthDataset
from tokenizer.data.readers import ClipReader
from tokenizer.data.registry import SOURCES, DataConfig, build_dataset
from tokenizer.data.sources import open_source
from tokenizer.data.squares import SquareSplit, split_into_squares
from tokenizer.data.video_datasets import build_video_dataset, make_video_config, resolve_root
from tokenizer.data.vspw import VSPWDataset

__all__ = [
    "SOURCES",
    "IGNORE_INDEX",
    "CityscapesDataset",
    "ClipReader",
    "DataConfig",
    "KittiDepthDataset",
    "SquareSplit",
    "VSPWDataset",
    "VideoClipDataset",
    "VideoDataConfig",
    "build_dataset",
    "build_video_dataset",
    "make_clip",
    "make_video_config",
    "open_source",
    "resolve_root",
    "split_into_squares",
]
