"""Real video data: readers, clip sampling, evaluation protocols, square splitting, bad files.

Every video and dataset tree here is made on the spot. Frames are flat grey
levels that encode the frame number, so which frames a clip holds can be read
back from their brightness whatever crop or flip was applied.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from footage import FPS, LEVEL_STEP, NUM_VIDEO_FRAMES, make_cityscapes, make_kitti, make_vspw, write_image, write_video
from tokenizer.data import (
    IGNORE_INDEX,
    SOURCES,
    DataConfig,
    VideoDataConfig,
    build_dataset,
    build_video_dataset,
    open_source,
    split_into_squares,
)
from tokenizer.data.kitti import KB_CROP_HEIGHT, KB_CROP_WIDTH
from tokenizer.data.sampling import UNBOUNDED_CLIPS, centered_clip_indices, random_clip_indices, snap_to_frames
from tokenizer.data.transforms import eval_resize_shape, random_resized_crop_box
from tokenizer.data.video_file import pyav_available
from tokenizer.runtime.devices import worker_start_method
from tokenizer.runtime.errors import ConfigError, DataError

BACKENDS = ["ffmpeg", pytest.param("pyav", marks=pytest.mark.skipif(not pyav_available(), reason="PyAV not installed"))]


def decoded_levels(path: Path) -> np.ndarray:
    """(N,) mean grey level of every frame as decoded sequentially: the ground truth for seeking."""
    return np.array([frame.mean() for frame in imageio.mimread(path, memtest=False)])


def frame_numbers(frames: torch.Tensor, levels: np.ndarray) -> np.ndarray:
    """Frame number of each frame (T, 3, H, W), as the nearest level of the reference decode."""
    means = frames.float().mean(dim=(1, 2, 3)).numpy()
    return np.abs(means[:, None] - levels[None, :]).argmin(axis=1)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.fixture(scope="module")
def levels(video) -> np.ndarray:
    return decoded_levels(video)


@pytest.fixture(scope="module")
def video_tree(tmp_path_factory, video) -> Path:
    """Three copies of `video` at different depths."""
    root = tmp_path_factory.mktemp("tree")
    for relative in ("a.mp4", "sub/b.mp4", "sub/deeper/c.mp4"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, root / relative)
    return root


# ---------------------------------------------------------------- readers


@pytest.mark.parametrize("backend", BACKENDS)
def test_video_reader_seeks_to_requested_frames(video, levels, backend):
    reader = open_source(video, VideoDataConfig(video_backend=backend))
    assert len(reader.timestamps) == NUM_VIDEO_FRAMES
    np.testing.assert_allclose(np.diff(reader.timestamps), 1 / FPS, atol=1e-4)
    wanted = [3, 4, 17, 30, 39]
    frames = reader.read(wanted)
    assert frames.shape == (5, 32, 48, 3) and frames.dtype == np.uint8
    found = np.abs(frames.mean(axis=(1, 2, 3))[:, None] - levels[None, :]).argmin(axis=1)
    assert found.tolist() == wanted


@pytest.mark.parametrize("suffix", [".avi", ".mkv", ".mov", ".webm"])
def test_other_containers_are_read(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", num_frames=12)
    reader = open_source(path, VideoDataConfig(video_backend="ffmpeg"))
    assert len(reader.timestamps) == 12
    frames = reader.read([2, 9])
    assert abs(frames[1].mean() - frames[0].mean() - 7 * LEVEL_STEP) < 3


def test_frame_folder_timing_rules(tmp_path):
    for i in range(12):  # natural order: frame_9 before frame_10
        write_image(tmp_path / "plain" / f"frame_{i}.png", np.full((8, 8, 3), i * 10, np.uint8))
    plain = open_source(tmp_path / "plain", VideoDataConfig(frame_folder_fps=20))
    np.testing.assert_allclose(plain.timestamps, np.arange(12) / 20)
    assert plain.read([9, 10])[:, 0, 0, 0].tolist() == [90, 100]

    shutil.copytree(tmp_path / "plain", tmp_path / "with_fps")
    (tmp_path / "with_fps" / "fps.txt").write_text("10\n")
    np.testing.assert_allclose(open_source(tmp_path / "with_fps", VideoDataConfig()).timestamps, np.arange(12) / 10)

    for seconds in (0.0, 0.04, 0.5, 1.25):
        write_image(tmp_path / "stamped" / f"img_{seconds:.3f}.jpg", np.zeros((8, 8, 3), np.uint8))
    np.testing.assert_allclose(open_source(tmp_path / "stamped", VideoDataConfig()).timestamps, [0.0, 0.04, 0.5, 1.25])


# ---------------------------------------------------------------- sampling


def test_snapping_keeps_frames_distinct_and_inside():
    timestamps = np.arange(6) / 10
    assert snap_to_frames(timestamps, np.array([0.0, 0.01, 0.02])).tolist() == [0, 1, 2]
    assert snap_to_frames(timestamps, np.array([0.5, 0.5, 0.5])).tolist() == [3, 4, 5]
    assert snap_to_frames(timestamps, np.array([0.06, 0.34])).tolist() == [1, 3]


def test_random_clip_strides_stay_in_range():
    timestamps = np.arange(300) / 30
    for seed in range(50):
        indices = random_clip_indices(timestamps, 6, 1 / 25, 1 / 3, np.random.default_rng(seed))
        gaps = np.diff(timestamps[indices])
        assert np.all(gaps >= 1 / 30 - 1e-9) and np.all(gaps <= 1 / 3 + 1 / 30 + 1e-9)


def test_short_source_shrinks_the_clip_instead_of_repeating_frames():
    timestamps = np.arange(8) / 25  # 0.28 s, far less than 6 gaps of >= 0.2 s
    indices = random_clip_indices(timestamps, 7, 0.2, 0.3, np.random.default_rng(0))
    assert np.all(np.diff(indices) > 0) and indices[0] >= 0 and indices[-1] <= 7
    assert centered_clip_indices(np.arange(40) / 25, 4, 0.2).tolist() == [12, 17, 22, 27]


def test_random_resized_crop_box_respects_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, height, width = random_resized_crop_box(90, 160, (0.6, 1.0), 4 / 3, rng)
        assert 0 <= top and top + height <= 90 and 0 <= left and left + width <= 160
        assert 0.55 <= height * width / (90 * 160) <= 1.0
        assert 3 / 4 - 0.05 <= width / height <= 4 / 3 + 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_clips_match_their_timestamps(video_tree, levels, backend):
    dataset = build_video_dataset(
        "videos", str(video_tree), "train", num_frames=4, frame_size=24, seed=7, video_backend=backend
    )
    assert len(dataset.sources) == 3 and len(dataset) == UNBOUNDED_CLIPS  # any id draws a clip
    for sample_id in range(6):
        clip = dataset[sample_id]
        assert clip["frames"].shape == (4, 3, 24, 24) and clip["frames"].dtype == torch.uint8
        assert clip["timestamps"].dtype == torch.float32 and clip["timestamps"][0] == 0
        assert int(clip["num_skipped"]) == 0
        numbers = frame_numbers(clip["frames"], levels)
        np.testing.assert_allclose(clip["timestamps"].numpy(), (numbers - numbers[0]) / FPS, atol=1e-4)
        gaps = np.diff(numbers)
        assert np.all(gaps >= 1) and np.all(gaps <= round(FPS / 3) + 1)


def test_items_depend_only_on_seed_and_sample_id(video_tree):
    def build(seed):
        return build_video_dataset("videos", video_tree, "train", num_frames=3, frame_size=16, seed=seed)

    first, again, other = build(1), build(1), build(2)
    for sample_id in (0, 5, 10**9):
        a, b = first[sample_id], again[sample_id]
        assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["timestamps"], b["timestamps"])

    def differs(x, y):
        return not torch.equal(x["timestamps"], y["timestamps"]) or not torch.equal(x["frames"], y["frames"])

    assert any(differs(first[i], other[i]) for i in range(4))
    assert any(differs(first[i], first[i + 1]) for i in range(4))


def test_flip_follows_the_config(tmp_path):
    gradient = np.broadcast_to(np.linspace(0, 250, 48, dtype=np.uint8)[None, :, None], (32, 48, 3)).copy()
    for i in range(6):
        write_image(tmp_path / "folder" / f"{i:03d}.png", gradient)

    def flipped(flip: bool) -> list[bool]:
        dataset = build_video_dataset("videos", tmp_path, "train", 2, 16, seed=0, horizontal_flip=flip)
        frames = [dataset[i]["frames"].float() for i in range(12)]
        return [bool(f[..., :8].mean() > f[..., 8:].mean()) for f in frames]

    assert 0 < sum(flipped(True)) < 12
    assert sum(flipped(False)) == 0


def test_non_train_split_gives_centred_square_clips(video_tree, levels):
    dataset = build_video_dataset("videos", video_tree, "val", num_frames=4, frame_size=20, seed=0)
    clip = dataset[1]
    assert clip["frames"].shape == (4, 3, 20, 20)
    assert frame_numbers(clip["frames"], levels).tolist() == [12, 17, 22, 27]
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_clips_batch_through_a_worker(video_tree):
    dataset = build_video_dataset("videos", video_tree, "train", num_frames=2, frame_size=16, seed=0)
    loader = DataLoader(dataset, batch_size=2, num_workers=1, multiprocessing_context=worker_start_method(1))
    batch = next(iter(loader))
    assert batch["frames"].shape == (2, 2, 3, 16, 16) and batch["num_skipped"].shape == (2,)


# ---------------------------------------------------------------- layouts


def test_kinetics_layout_and_excluded_list(tmp_path, video):
    for relative in (
        "train/abseiling/dvEr9R6qkuQ_000026_000036.mp4",
        "train/abseiling/keep.mp4",
        "train/luge/other.mkv",
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, tmp_path / relative)
    for i in range(4):
        write_image(tmp_path / "train" / "luge" / "frames_video" / f"{i:05d}.jpg", np.zeros((8, 8, 3), np.uint8))

    def names(dataset):
        return sorted(Path(source).name for source in dataset.sources)

    assert names(build_video_dataset("kinetics", tmp_path, "train", 2, 16)) == ["frames_video", "keep.mp4", "other.mkv"]
    assert len(build_video_dataset("kinetics", tmp_path, "train", 2, 16, kinetics_exclude=False).sources) == 4
    with pytest.raises(DataError, match="val/"):
        build_video_dataset("kinetics", tmp_path, "val", 2, 16)


def test_vspw_protocol(tmp_path):
    make_vspw(tmp_path)
    dataset = build_video_dataset("vspw", tmp_path, "val", num_frames=7, frame_size=12)
    assert len(dataset) == 2  # clips end on frames 19 and 39
    clip = dataset[0]
    expected = np.arange(1, 20, 3)
    np.testing.assert_allclose(clip["timestamps"].numpy(), np.arange(7) * 0.2, atol=1e-6)
    assert np.round(clip["frames"].float().mean(dim=(1, 2, 3)).numpy() / 5).tolist() == expected.tolist()
    assert clip["frames"].shape == (7, 3, 12, 20)
    segmentation = clip["segmentation"]
    assert segmentation.shape == (7, 24, 40) and segmentation.dtype == torch.int64
    labelled = [k for k, number in enumerate(expected) if number != 13]
    assert segmentation[labelled, 5, 5].tolist() == expected[labelled].tolist()
    assert segmentation[labelled[0], 0, :4].tolist() == [IGNORE_INDEX, 123, IGNORE_INDEX, IGNORE_INDEX]
    assert (segmentation[expected.tolist().index(13)] == IGNORE_INDEX).all()


def test_cityscapes_protocol(tmp_path):
    make_cityscapes(tmp_path)
    dataset = build_video_dataset("cityscapes", tmp_path, "val", num_frames=7, frame_size=8)
    assert len(dataset) == 1
    clip = dataset[0]
    assert clip["frames"].shape == (7, 3, 8, 16)
    assert np.round(clip["frames"].float().mean(dim=(1, 2, 3)).numpy() / 10).tolist() == list(range(1, 20, 3))
    np.testing.assert_allclose(clip["timestamps"].numpy(), np.arange(7) * 0.1875, atol=1e-6)
    segmentation = clip["segmentation"]
    assert segmentation.shape == (7, 16, 32)
    assert (segmentation[:6] == IGNORE_INDEX).all()
    assert segmentation[6, 0, :6].tolist() == [0, 1, 13, IGNORE_INDEX, 18, IGNORE_INDEX]


def test_every_source_declares_whether_it_labels_only_its_last_frame(tmp_path):
    """Evaluation reads this from the dataset class (rollout.py's protocol "auto"), not from the source's name."""
    last_frame_only = {name for name, source in SOURCES.items() if source.dataset.labels_last_frame_only}
    assert last_frame_only == {"cityscapes", "kitti"}
    make_cityscapes(tmp_path)
    data = DataConfig(source="cityscapes", root=str(tmp_path), frame_size=8, val_num_frames=7)
    dataset = build_dataset(data, "val", 0)
    assert type(dataset).labels_last_frame_only and (dataset[0]["segmentation"][:6] == IGNORE_INDEX).all()


def test_kitti_protocol_crop_mask_and_depth(tmp_path, caplog):
    make_kitti(tmp_path)
    dataset = build_video_dataset("kitti", tmp_path, "test", num_frames=7, frame_size=32)
    assert len(dataset) == 4  # targets 51, 57, 63, 69; other Eigen frames have no image here
    with caplog.at_level(logging.WARNING):
        stand_in = dataset[0]  # targets 51 and 57 need frames 39 and 45, which are missing
    assert int(stand_in["num_skipped"]) == 2 and "0000000039.png" in caplog.text and "0000000045.png" in caplog.text
    assert np.round(stand_in["frames"].float().mean(dim=(1, 2, 3)).numpy()).tolist() == list(range(51, 64, 2))

    clip = dataset[3]
    assert int(clip["num_skipped"]) == 0
    assert clip["frames"].shape == (7, 3, 32, 64)  # 352 x 1216 squeezed to the 2:1 cap
    assert np.round(clip["frames"].float().mean(dim=(1, 2, 3)).numpy()).tolist() == list(range(57, 70, 2))
    np.testing.assert_allclose(clip["timestamps"].numpy(), np.arange(7) * 0.2, atol=1e-6)
    depth = clip["depth"]
    assert depth.shape == (7, KB_CROP_HEIGHT, KB_CROP_WIDTH) and depth.dtype == torch.float32
    assert depth[-1, 300, 600] == 50 and depth[-1, 200, 600] == 10
    assert depth[-1, 301, 600] == 0 and depth[-1, 302, 600] == 0
    assert depth[-1, 100, 600] == 0 and depth[-1, 200, 10] == 0  # outside the Garg crop
    assert (depth[list(range(57, 70, 2)).index(61)] == 0).all()


def test_roots_come_from_environment_variables(tmp_path, monkeypatch):
    make_vspw(tmp_path, num_frames=20)
    monkeypatch.setenv("VSPW_ROOT", str(tmp_path))
    assert len(build_video_dataset("vspw", None, "val", 7, 12)) == 1
    monkeypatch.delenv("VSPW_ROOT")
    with pytest.raises(DataError, match="VSPW_ROOT"):
        build_video_dataset("vspw", None, "val", 7, 12)
    with pytest.raises(ConfigError, match="horizontal_flip"):
        build_video_dataset("vspw", tmp_path, "val", 7, 12, horizontal_flipp=True)


# ---------------------------------------------------------------- squares


@pytest.mark.parametrize("shape", [(48, 81), (81, 48), (40, 80)])
def test_label_halves_cover_every_pixel_once(shape):
    height, width = shape
    wide, side = width > height, min(shape)
    frames = torch.zeros(2, 3, 3, height, width)
    labels = 1000 + torch.arange(2 * 3 * height * width).reshape(2, 3, height, width)  # no value is IGNORE_INDEX
    squares, halves, split = split_into_squares(frames, labels)
    assert squares.shape == (4, 3, 3, side, side)
    kept = halves[halves != IGNORE_INDEX]
    assert torch.equal(kept.sort().values, labels.flatten().sort().values)
    odd = max(shape) % 2 == 1
    assert int((halves == IGNORE_INDEX).sum()) == (2 * 3 * side if odd else 0)
    if odd:  # the padding sits at the far end of the first half
        assert (halves[:2, ..., -1] == IGNORE_INDEX).all() if wide else (halves[:2, ..., -1, :] == IGNORE_INDEX).all()
    assert split.is_wide == wide and split.overlap == (max(shape) / side < 2)


# ---------------------------------------------------------------- bad data


@pytest.mark.parametrize("backend", BACKENDS)
def test_corrupt_video_is_skipped_counted_and_named(tmp_path, video, caplog, backend):
    for name in ("good1.mp4", "good2.mp4"):
        shutil.copy(video, tmp_path / name)
    (tmp_path / "broken.mp4").write_bytes(b"\x00not a video" * 40)
    (tmp_path / "truncated.mp4").write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    dataset = build_video_dataset(
        "videos", tmp_path, "train", num_frames=3, frame_size=16, seed=3, video_backend=backend
    )
    with caplog.at_level(logging.WARNING):
        skipped = [int(dataset[i]["num_skipped"]) for i in range(16)]
    assert sum(skipped) >= 2
    for name in ("broken.mp4", "truncated.mp4"):
        assert sum(str(tmp_path / name) in record.getMessage() for record in caplog.records) == 1


def test_all_corrupt_raises_data_error(tmp_path):
    for i in range(3):
        (tmp_path / f"bad{i}.mp4").write_bytes(b"garbage" * 10)
    dataset = build_video_dataset("videos", tmp_path, "train", num_frames=3, frame_size=16)
    with pytest.raises(DataError, match=str(tmp_path)):
        dataset[0]


def test_too_short_video_is_skipped(tmp_path, video):
    shutil.copy(video, tmp_path / "long.mp4")
    write_video(tmp_path / "short.mp4", num_frames=2)
    dataset = build_video_dataset("videos", tmp_path, "train", num_frames=4, frame_size=16)
    assert sum(int(dataset[i]["num_skipped"]) for i in range(8)) >= 1


def test_empty_or_missing_root_names_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    for source, root in (
        ("videos", tmp_path / "empty"),
        ("videos", tmp_path / "missing"),
        ("vspw", tmp_path / "empty"),
        ("cityscapes", tmp_path / "empty"),
    ):
        with pytest.raises(DataError, match=str(root)):
            build_video_dataset(source, root, "val", 7, 16)
    make_vspw(tmp_path / "vspw_tiny", num_frames=10)  # too short for any clip
    with pytest.raises(DataError, match="no evaluation clips"):
        build_video_dataset("vspw", tmp_path / "vspw_tiny", "val", 7, 16)


def test_eval_resize_caps_the_aspect_ratio():
    assert eval_resize_shape(480, 853, 256, 2.0) == (256, 455)
    assert eval_resize_shape(352, 1216, 256, 2.0) == (256, 512)
    assert eval_resize_shape(1024, 2048, 256, 2.0) == (256, 512)
