"""The released task heads against the published code's outputs (heads_reference_tiny.pt, tests/reference_files.py),
and the RGB head's files, loading rules and training."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reference_files import load_reference
from tokenizer.backbone import IMAGENET_MEAN, IMAGENET_STD
from tokenizer.runtime.errors import CheckpointError, InputError
from worldmodel.head_training import train_heads
from worldmodel.heads import (
    DEPTH,
    RGB,
    SEGMENTATION,
    WEIGHTS_FILE,
    DepthHead,
    SegmentationHead,
    TaskHeads,
    load_head,
    save_head,
)
from worldmodel.rgb_head import POSITION_KEY, RGBHead, RGBHeadConfig, sincos_table

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference() -> dict:
    return load_reference("heads_reference_tiny.pt")


def as_features(maps: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The published heads' input (B, D, h, w) -> our features (B, N, D) row-major and the grid."""
    return maps.flatten(2).transpose(1, 2), tuple(maps.shape[-2:])


def rgb_sizes(entry: dict) -> RGBHeadConfig:
    """The published constructor's keyword names -> ours."""
    c = entry["config"]
    return RGBHeadConfig(c["hidden_size"], c["depth"], c["num_heads"], c["mlp_size"], c["patch"], c["img_size"])


def released_file(tmp_path: Path, name: str, state: dict) -> Path:
    """A state dict written as a released head's pytorch_model.bin would be."""
    path = tmp_path / f"{name}.bin"
    torch.save(state, path)
    return path


def test_linear_probes_match_the_published_heads(reference, tmp_path):
    seg_entry, depth_entry = reference["seg_head"], reference["depth_head"]
    seg = load_head(released_file(tmp_path, "seg", seg_entry["state_dict"]), kind=SEGMENTATION)
    depth = load_head(
        released_file(tmp_path, "depth", depth_entry["state_dict"]),
        kind=DEPTH,
        min_depth=depth_entry["min_depth"],
        max_depth=depth_entry["max_depth"],
    )
    assert isinstance(seg, SegmentationHead) and seg.num_classes == seg_entry["num_classes"]
    assert isinstance(depth, DepthHead) and depth.num_bins == depth_entry["num_bins"]
    with torch.no_grad():
        seg_error = (seg(*as_features(seg_entry["input"])) - seg_entry["output"]).abs().max().item()
        depth_error = (depth(*as_features(depth_entry["input"])) - depth_entry["output"]).abs().max().item()
    print(f"max abs error: segmentation {seg_error:.2e}, depth {depth_error:.2e}")
    assert seg_error < TOLERANCE and depth_error < TOLERANCE


@pytest.fixture(scope="module")
def released_rgb(reference, tmp_path_factory) -> tuple[RGBHead, dict, Path]:
    """The published RGB head loaded from a bare file, its reference entry, and the file."""
    entry = reference["rgb_head"]
    path = released_file(tmp_path_factory.mktemp("rgb"), "rgb", entry["state_dict"])
    head = load_head(
        path, kind=RGB, feature_norm=(entry["norm_weight"], entry["norm_bias"]), rgb_config=rgb_sizes(entry)
    )
    return head, entry, path


def test_rgb_head_matches_the_published_head_on_both_grids(released_rgb):
    head, entry, _ = released_rgb
    assert isinstance(head, RGBHead) and not head.training and head.in_dim == entry["in_size"]
    # The published head was built with ImageNet's statistics, our default.
    assert (tuple(entry["image_mean"]), tuple(entry["image_std"])) == (IMAGENET_MEAN, IMAGENET_STD)
    assert set(head.state_dict()) == set(entry["state_dict"])
    errors = {}
    for inputs, outputs in (("input", "output"), ("input_other_grid", "output_other_grid")):
        features, grid = as_features(entry[inputs])
        with torch.no_grad():
            pixels = head(features, grid)
        assert pixels.shape == entry[outputs].shape
        errors[grid] = (pixels - entry[outputs]).abs().max().item()
    print("max abs error: rgb " + ", ".join(f"{h}x{w} grid {e:.2e}" for (h, w), e in errors.items()))
    assert max(errors.values()) < TOLERANCE
    assert (4, 4) in errors and (6, 5) in errors  # the native grid and one the table is resized for


def test_rgb_head_loads_with_and_without_the_position_table(released_rgb, tmp_path):
    head, entry, _ = released_rgb
    state = entry["state_dict"]
    sizes = rgb_sizes(entry)
    norm = (entry["norm_weight"], entry["norm_bias"])
    without = {k: v for k, v in state.items() if k != POSITION_KEY}
    bare = RGBHead(entry["in_size"], norm, sizes)
    bare.load_state_dict(state)  # holding it: the file's table is used, as the published code uses it
    assert torch.equal(getattr(bare, POSITION_KEY), state[POSITION_KEY])
    bare.load_state_dict(without)  # without: the config's table
    assert torch.equal(getattr(bare, POSITION_KEY)[0], sincos_table(sizes.hidden_size, sizes.native_side))
    loaded = load_head(released_file(tmp_path, "no_table", without), kind=RGB, feature_norm=norm, rgb_config=sizes)
    assert torch.equal(loaded.state_dict()[POSITION_KEY], bare.state_dict()[POSITION_KEY])
    for key in without:
        assert torch.equal(loaded.state_dict()[key], state[key]), key
    # The reference vectors perturb the table too, so only the file's own table reproduces them.
    features, grid = as_features(entry["input"])
    with torch.no_grad():
        assert (loaded(features, grid) - entry["output"]).abs().max() > 10 * TOLERANCE

    wrong_size = dataclasses.replace(sizes, image_size=2 * sizes.image_size)
    with pytest.raises(CheckpointError, match=POSITION_KEY):
        load_head(released_file(tmp_path, "full", state), kind=RGB, feature_norm=norm, rgb_config=wrong_size)


def test_rgb_head_folder_round_trip_keeps_the_released_layout(released_rgb, tmp_path):
    head, entry, _ = released_rgb
    save_head(head, tmp_path / "rgb")
    assert set(load_file(str(tmp_path / "rgb" / WEIGHTS_FILE))) == set(entry["state_dict"])
    norm = (entry["norm_weight"], entry["norm_bias"])
    again = load_head(tmp_path / "rgb", feature_norm=norm)
    assert again.config() == head.config()
    features, grid = as_features(entry["input_other_grid"])
    with torch.no_grad():
        assert torch.equal(again(features, grid), head(features, grid))
    frames = again.render(features, grid)
    assert frames.dtype == torch.uint8 and frames.shape == (2, 3, 96, 80)
    with pytest.raises(InputError, match="feature_norm"):
        load_head(tmp_path / "rgb")
    with pytest.raises(CheckpointError, match="rgb head, not a segmentation head"):
        load_head(tmp_path / "rgb", kind=SEGMENTATION, feature_norm=norm)


def test_files_of_the_other_family_get_one_clear_error(reference, released_rgb, tmp_path):
    _, entry, rgb_path = released_rgb
    norm = (entry["norm_weight"], entry["norm_bias"])
    seg_path = released_file(tmp_path, "seg", reference["seg_head"]["state_dict"])
    with pytest.raises(CheckpointError, match="linear-probe head"):
        load_head(seg_path, kind=RGB, feature_norm=norm, rgb_config=rgb_sizes(entry))
    with pytest.raises(CheckpointError, match="holds an RGB head"):
        load_head(rgb_path, kind=DEPTH)
    with pytest.raises(InputError, match="feature_norm"):
        load_head(rgb_path, kind=RGB, rgb_config=rgb_sizes(entry))
    with pytest.raises(InputError, match="feature_norm"):
        RGBHead(entry["in_size"], (entry["norm_weight"][:8], entry["norm_bias"]), rgb_sizes(entry))


MICRO_RGB = RGBHeadConfig(hidden_size=32, num_layers=1, num_heads=2, mlp_size=64, patch_size=4, image_size=16)


def micro_rgb_head(in_dim: int = 8, seed: int = 0) -> RGBHead:
    torch.manual_seed(seed)
    return RGBHead(in_dim, (torch.rand(in_dim) + 0.5, torch.randn(in_dim)), MICRO_RGB)


def test_rgb_head_shapes_and_input_errors():
    head = micro_rgb_head().eval()
    features = torch.randn(2, 3, 12, 8)  # (B, T, N, D) on a 3x4 grid
    assert head(features, (3, 4)).shape == (2, 3, 3, 12, 16)
    with pytest.raises(InputError, match="N = 3\\*4"):
        head(features[..., :11, :], (3, 4))
    with pytest.raises(InputError, match="D = 8"):
        head(torch.randn(2, 12, 7), (3, 4))
    with pytest.raises(InputError, match="multiple of patch_size"):
        RGBHeadConfig(patch_size=16, image_size=40).validate()


def test_task_heads_load_the_rgb_head_only_with_the_norm_affine(tmp_path):
    rgb = micro_rgb_head()
    norm = (rgb.norm_weight, rgb.norm_bias)
    TaskHeads(SegmentationHead(8, 3), rgb=rgb).save(tmp_path / "heads")
    assert sorted(p.name for p in (tmp_path / "heads").iterdir()) == ["rgb", "segmentation"]
    both = TaskHeads.load(tmp_path / "heads", in_dim=8, feature_norm=norm)
    assert [kind for kind, _ in both.items()] == [SEGMENTATION, RGB]
    assert torch.equal(both.rgb.norm_weight, rgb.norm_weight)
    # Callers that read segmentation or depth alone need not know the backbone.
    assert TaskHeads.load(tmp_path / "heads", in_dim=8).rgb is None
    TaskHeads(rgb=rgb).save(tmp_path / "rgb_only")
    with pytest.raises(InputError, match="feature_norm"):
        TaskHeads.load(tmp_path / "rgb_only")
    assert TaskHeads.load(tmp_path / "rgb_only", feature_norm=norm).segmentation is None


def _colour_clips(num_batches: int, seed: int):
    """16x16 frames of 4x4 patches, each one of three flat colours."""
    g = torch.Generator().manual_seed(seed)
    palette = torch.tensor([[230, 40, 40], [40, 200, 60], [50, 60, 220]], dtype=torch.uint8)
    for _ in range(num_batches):
        classes = torch.randint(0, 3, (2, 2, 4, 4), generator=g)  # (B, T, h, w)
        pixels = classes.repeat_interleave(4, -2).repeat_interleave(4, -1)
        yield {"frames": palette[pixels].permute(0, 1, 4, 2, 3).contiguous()}


def _colour_features(frames: torch.Tensor) -> torch.Tensor:
    """One-hot of each patch's colour, (B, T, 3, 16, 16) -> (B, T, 16, 8)."""
    ids = frames[:, :, :, ::4, ::4].float().argmax(2)  # the brightest channel names the colour
    onehot = torch.nn.functional.one_hot(ids.flatten(2), 3).float()
    return torch.cat([onehot, torch.zeros(*onehot.shape[:-1], 5)], dim=-1)


def test_train_heads_fits_an_rgb_head_without_labels():
    head = micro_rgb_head()
    seg, depth, log = train_heads(
        _colour_features, list(_colour_clips(4, seed=0)), grid=(4, 4), steps=30, lr=1.0, rgb_head=head, rgb_lr=1e-2
    )
    assert seg is None and depth is None and not head.training
    assert len(log) == 30 and set(log[-1]) == {"step", "rgb_loss"}
    assert log[-1]["rgb_loss"] < 0.2 * log[0]["rgb_loss"]
    clip = next(_colour_clips(1, seed=1))
    frames = clip["frames"].flatten(0, 1)
    drawn = head.render(_colour_features(clip["frames"]).flatten(0, 1), (4, 4))
    # Of 255, on unseen clips: near the true colours (the untrained head is about 80 off).
    assert (drawn.float() - frames.float()).abs().mean() < 15
