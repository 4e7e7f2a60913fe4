"""Finding clip sources (video files and frame folders) under a dataset root."""

from __future__ import annotations

import os
from pathlib import Path

from tokenizer.data.frame_folder import is_image_name
from tokenizer.data.video_file import VIDEO_SUFFIXES
from tokenizer.runtime.errors import DataError

KINETICS_EXCLUDED_FILE = Path(__file__).with_name("kinetics_excluded.txt")

VIDEOS_LAYOUT = "video files (.mp4, .webm, .avi, .mkv, .mov) and/or folders of .jpg/.png frames, at any depth"
KINETICS_LAYOUT = "<root>/<split>/<class>/<video>.mp4 or <root>/<split>/<class>/<video>/<frame>.jpg"


def is_video_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_SUFFIXES


def find_clip_sources(root: str | Path) -> list[str]:
    """Every video file and frame folder under `root`, sorted by path.

    A folder counts as a frame folder when it directly holds an image file.
    Hidden files and folders are ignored. Raises DataError when there is none.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"video root {root} is not a folder; expected a folder holding {VIDEOS_LAYOUT}")
    sources = []
    for folder, subfolders, files in os.walk(root, followlinks=True):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        if any(is_image_name(name) for name in files):
            sources.append(folder)
        sources.extend(os.path.join(folder, name) for name in files if is_video_name(name))
    if not sources:
        raise DataError(f"video root {root} holds no videos; expected {VIDEOS_LAYOUT}")
    return sorted(sources)


def read_kinetics_excluded(path: str | Path = KINETICS_EXCLUDED_FILE) -> set[str]:
    """The `<class>/<video id>` keys listed in an exclusion file."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text().splitlines())
    return {line for line in lines if line}


def find_kinetics_sources(root: str | Path, split: str, exclude: bool) -> list[str]:
    """The videos (files or frame folders) of `<root>/<split>/<class>/`, sorted by path.

    With `exclude`, videos listed in kinetics_excluded.txt are left out.
    Entries are not opened here: with ~550k training videos, listing must stay cheap.
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DataError(f"Kinetics root {root} has no {split}/ folder; expected {KINETICS_LAYOUT}")
    excluded = read_kinetics_excluded() if exclude else set()
    sources = []
    for class_entry in sorted(os.scandir(split_dir), key=lambda entry: entry.name):
        if not class_entry.is_dir() or class_entry.name.startswith("."):
            continue
        for entry in os.scandir(class_entry.path):
            if entry.name.startswith("."):
                continue
            if not (entry.is_dir() or is_video_name(entry.name)):
                continue
            video_id = os.path.splitext(entry.name)[0] if entry.is_file() else entry.name
            if f"{class_entry.name}/{video_id}" not in excluded:
                sources.append(entry.path)
    if not sources:
        raise DataError(f"Kinetics folder {split_dir} holds no videos; expected {KINETICS_LAYOUT}")
    return sorted(sources)
