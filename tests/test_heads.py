"""Task heads (released key layout, save/load, linear-probe training) and the mIoU / RMSE metrics."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

import train_heads as train_heads_script
from conftest import micro_tokenizer_config
from tokenizer.data.kitti import MAX_DEPTH_M, MIN_DEPTH_M
from tokenizer.data.registry import DataConfig, build_dataset
from tokenizer.data.squares import split_into_squares
from tokenizer.model import Tokenizer
from tokenizer.runtime.config import load_config
from tokenizer.runtime.errors import CheckpointError, ConfigError, InputError
from worldmodel.evaluation import score_heads
from worldmodel.head_training import HeadsConfig, HeadsTrainConfig, train_heads
from worldmodel.heads import (
    DEPTH,
    SEGMENTATION,
    DepthHead,
    SegmentationHead,
    TaskHeads,
    load_head,
    save_head,
    to_label_size,
)
from worldmodel.metrics import DepthRMSE, MeanIoU

RELEASED_KEYS = {
    "bn.weight",
    "bn.bias",
    "bn.running_mean",
    "bn.running_var",
    "bn.num_batches_tracked",
    "head.weight",
    "head.bias",
}


def released_state(in_dim: int, outputs: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict laid out like the released heads, with recognisable random values."""
    g = torch.Generator().manual_seed(seed)
    return {
        "bn.weight": torch.rand(in_dim, generator=g) + 0.5,
        "bn.bias": torch.randn(in_dim, generator=g),
        "bn.running_mean": torch.randn(in_dim, generator=g),
        "bn.running_var": torch.rand(in_dim, generator=g) + 0.5,
        "bn.num_batches_tracked": torch.tensor(1234),
        "head.weight": torch.randn(outputs, in_dim, 1, 1, generator=g),
        "head.bias": torch.randn(outputs, generator=g),
    }


def test_state_dict_keys_and_shapes_match_released_heads():
    seg = SegmentationHead(16, 124).state_dict()
    depth = DepthHead(16, MIN_DEPTH_M, MAX_DEPTH_M).state_dict()
    assert set(seg) == RELEASED_KEYS and set(depth) == RELEASED_KEYS
    assert seg["head.weight"].shape == (124, 16, 1, 1) and seg["head.bias"].shape == (124,)
    assert depth["head.weight"].shape == (256, 16, 1, 1)
    assert seg["bn.running_var"].shape == (16,)


def test_head_output_shapes_and_depth_range():
    feats = torch.randn(2, 3, 12, 16)  # (B, T, N, D) on a 3x4 grid
    seg = SegmentationHead(16, 5).eval()
    depth = DepthHead(16, 2.0, 10.0, num_bins=32).eval()
    assert seg(feats, (3, 4)).shape == (2, 3, 5, 3, 4)
    d = depth(feats, (3, 4))
    assert d.shape == (2, 3, 1, 3, 4)
    assert (d >= 2.0).all() and (d <= 10.0).all()
    assert seg.predict(feats[:, 0], (3, 4), (12, 16)).shape == (2, 12, 16)
    assert depth.predict(feats[:, 0], (3, 4), (12, 16)).shape == (2, 12, 16)
    assert to_label_size(torch.randn(2, 5, 3, 4), (6, 8)).shape == (2, 5, 6, 8)
    with pytest.raises(InputError):
        seg(torch.randn(2, 11, 16), (3, 4))


def test_row_major_patch_order():
    # Patch n must land at row n // w, column n % w: a head that reads feature 0 shows it.
    head = SegmentationHead(1, 1).eval()
    with torch.no_grad():
        head.head.weight.fill_(1.0)
        head.head.bias.zero_()
    feats = torch.arange(6.0).view(1, 6, 1)
    out = head(feats, (2, 3))[0, 0]
    expected = torch.arange(6.0) / math.sqrt(1 + head.bn.eps)  # fresh BatchNorm: mean 0, var 1
    assert torch.allclose(out.flatten(), expected, atol=1e-5)


@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_load_released_style_segmentation_head(tmp_path, suffix):
    state = released_state(16, 124)
    path = tmp_path / f"seg_head{suffix}"
    if suffix == ".bin":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    head = load_head(path, kind=SEGMENTATION)
    assert isinstance(head, SegmentationHead) and not head.training
    assert head.num_classes == 124 and head.in_dim == 16  # inferred from head.weight
    for key, value in state.items():
        assert torch.equal(head.state_dict()[key], value), key


def test_load_released_style_depth_head_uses_kitti_range(tmp_path):
    path = tmp_path / "depth_head.pt"
    state = released_state(8, 256)
    del state["bn.num_batches_tracked"]  # unused by these heads, so a file without it still loads
    torch.save({"state_dict": state}, path)  # Lightning-style wrapper
    head = load_head(path, kind=DEPTH)
    assert isinstance(head, DepthHead)
    assert (head.min_depth, head.max_depth, head.num_bins) == (MIN_DEPTH_M, MAX_DEPTH_M, 256)


def test_mismatched_file_names_bad_keys_and_shapes(tmp_path):
    state = released_state(16, 19)
    state["head.weigth"] = state.pop("head.bias")  # misspelt key
    path = tmp_path / "bad.bin"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_head(path, kind=SEGMENTATION)
    assert "head.bias" in str(err.value) and "head.weigth" in str(err.value)

    torch.save(released_state(16, 19), path)
    with pytest.raises(CheckpointError) as err:
        load_head(path, kind=SEGMENTATION, in_dim=32)
    assert "bn.weight" in str(err.value) and "(16,)" in str(err.value) and "(32,)" in str(err.value)

    with pytest.raises(InputError):
        load_head(path)  # a bare file needs its kind


def test_save_and_load_our_head_folder(tmp_path):
    head = SegmentationHead(8, 3, class_names=["road", "car", "sky"])
    with torch.no_grad():
        head.head.weight.normal_()
        head.bn.running_mean.normal_()
    save_head(head, tmp_path / "seg")
    loaded = load_head(tmp_path / "seg")
    assert isinstance(loaded, SegmentationHead) and loaded.class_names == ["road", "car", "sky"]
    for key, value in head.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    depth = DepthHead(8, 0.5, 20.0, num_bins=64)
    save_head(depth, tmp_path / "depth")
    loaded_depth = load_head(tmp_path / "depth", kind=DEPTH)
    assert (loaded_depth.min_depth, loaded_depth.max_depth, loaded_depth.num_bins) == (0.5, 20.0, 64)
    with pytest.raises(CheckpointError):
        load_head(tmp_path / "depth", kind=SEGMENTATION)


def test_miou_known_answer_with_ignore_and_absent_class():
    metric = MeanIoU(num_classes=4)
    target = torch.tensor([[[0, 0, 1, 1, 255, 255]]])
    pred = torch.tensor([[[0, 1, 1, 1, 2, 0]]])
    metric.update(pred, target)
    # Ignored pixels drop out (their predictions 2 and 0 do not count). Class 0: I=1, U=2;
    # class 1: I=2, U=3; class 3 is absent from both and left out of the mean.
    assert metric.compute() == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert math.isnan(metric.iou_per_class()[3].item())

    # A class predicted but never targeted counts with IoU 0 once it appears.
    metric.update(torch.tensor([[[3]]]), torch.tensor([[[0]]]))
    assert metric.compute() == pytest.approx((1 / 3 + 2 / 3 + 0.0) / 3)


def test_miou_accumulates_over_batches_and_takes_logits():
    target = torch.randint(0, 5, (4, 7, 9))
    logits = torch.randn(4, 5, 7, 9)
    whole = MeanIoU(5)
    whole.update(logits, target)
    split = MeanIoU(5)
    split.update(logits[:1], target[:1])
    split.update(logits[1:].argmax(1), target[1:])
    assert split.compute() == pytest.approx(whole.compute())
    assert torch.equal(split.confusion, whole.confusion)
    whole.reset()
    assert math.isnan(whole.compute())


def test_miou_rejects_bad_inputs():
    metric = MeanIoU(3)
    with pytest.raises(InputError):
        metric.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(InputError):
        metric.update(torch.zeros(1, 2, 2, dtype=torch.long), torch.full((1, 2, 2), 7))
    with pytest.raises(InputError):
        metric.update(torch.randn(1, 4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_rmse_pools_valid_pixels_over_the_stream():
    metric = DepthRMSE()
    metric.update(torch.tensor([[[1.0, 5.0, 9.0]]]), torch.tensor([[[2.0, 0.0, 9.0]]]))  # middle pixel invalid
    metric.update(torch.tensor([[[[4.0, 3.0]]]]), torch.tensor([[[1.0, 3.0]]]))  # (B, 1, H, W) prediction
    # squared errors 1, 0 (first call) and 9, 0 (second) over 4 valid pixels.
    assert metric.compute() == pytest.approx(math.sqrt(10 / 4))

    assert math.isnan(DepthRMSE().compute())
    with pytest.raises(InputError):
        metric.update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 3))


@pytest.mark.parametrize("frame_shape", [(48, 80), (80, 48), (40, 80)])
def test_upsampled_predictions_land_on_their_label_half(frame_shape):
    height, width = frame_shape
    wide = width > height
    scale = 2  # labels at twice the frame resolution
    # Each frame pixel holds the label-space coordinate of its centre along the long side.
    along = (torch.arange(max(frame_shape)) + 0.5) * scale
    frames = (along.view(1, 1, 1, -1) if wide else along.view(1, 1, -1, 1)).expand(1, 1, height, width)
    labels = torch.zeros(1, height * scale, width * scale, dtype=torch.int64)
    squares, halves, split = split_into_squares(frames, labels)
    predictions = to_label_size(squares, tuple(halves.shape[-2:]), split)
    assert predictions.shape == (2, 1, *halves.shape[-2:])
    half_length = halves.shape[-1] if wide else halves.shape[-2]
    expected = torch.arange(half_length) + 0.5
    for part, offset in ((0, 0), (1, max(frame_shape) * scale - half_length)):
        got = predictions[part, 0, 0, :] if wide else predictions[part, 0, :, 0]
        assert torch.allclose(got, expected + offset, atol=scale / 2 + 1e-4)


def _synthetic_clips(num_batches: int, seed: int):
    """Frames whose 4x4 patches carry a class id in their red channel; depth = 2 + 3 * class."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(num_batches):
        classes = torch.randint(0, 3, (2, 2, 4, 4), generator=g)  # (B, T, h, w)
        pixels = classes.repeat_interleave(4, -2).repeat_interleave(4, -1)  # (B, T, 16, 16)
        frames = torch.zeros(2, 2, 3, 16, 16, dtype=torch.uint8)
        frames[:, :, 0] = (pixels * 80).to(torch.uint8)
        seg = pixels.clone()
        seg[..., :2, :] = 255  # an unlabelled strip
        depth = 2.0 + 3.0 * pixels.float()
        depth[..., :, :2] = 0.0  # no measurement there
        yield {"frames": frames, "segmentation": seg, "depth": depth}


def _features(frames: torch.Tensor) -> torch.Tensor:
    """A frozen 'backbone': one-hot of the patch class plus noise, (B, T, 3, 16, 16) -> (B, T, 16, 8)."""
    red = frames[:, :, 0, ::4, ::4].long() // 80  # (B, T, 4, 4) class ids
    onehot = torch.nn.functional.one_hot(red.flatten(2), 3).float()
    noise = torch.randn(*onehot.shape[:-1], 5, generator=torch.Generator().manual_seed(int(frames.sum())))
    return torch.cat([onehot * 2.0, 0.1 * noise], dim=-1)


def test_train_heads_learns_a_linear_problem():
    torch.manual_seed(0)  # head initialisation
    seg_head, depth_head, log = train_heads(
        _features,
        list(_synthetic_clips(4, seed=0)),
        grid=(4, 4),
        num_classes=3,
        min_depth=0.5,
        max_depth=12.0,
        steps=150,
        lr=0.05,
    )
    assert len(log) == 150 and log[-1]["seg_loss"] < log[0]["seg_loss"]
    assert not seg_head.training and not depth_head.training
    assert seg_head.bn.num_batches_tracked.item() == 150  # BatchNorm statistics were trained

    miou, rmse = MeanIoU(3), DepthRMSE()
    untrained_rmse = DepthRMSE()
    for clip in _synthetic_clips(2, seed=1):
        feats = _features(clip["frames"]).flatten(0, 1)
        miou.update(seg_head.predict(feats, (4, 4), (16, 16)), clip["segmentation"].flatten(0, 1))
        rmse.update(depth_head.predict(feats, (4, 4), (16, 16)), clip["depth"].flatten(0, 1))
        untrained_rmse.update(torch.full((4, 16, 16), 6.0), clip["depth"].flatten(0, 1))
    # Bilinear upsampling blurs patch borders, so corner pixels stay wrong: about 0.93 is the ceiling here.
    assert miou.compute() > 0.85
    assert rmse.compute() < 0.6 * untrained_rmse.compute()


def test_train_heads_stops_when_a_one_shot_iterator_runs_out():
    seg_head, depth_head, log = train_heads(
        _features, _synthetic_clips(3, seed=0), grid=(4, 4), num_classes=3, steps=10
    )
    assert depth_head is None and seg_head is not None
    assert len(log) == 3


def test_train_heads_script_on_shapes_learns_and_refuses_to_overwrite(tmp_path, capsys):
    """configs/heads/tiny.yaml end to end on micro features: the probes beat their untrained selves, heads reload."""
    torch.manual_seed(0)
    tokenizer = Tokenizer.build(micro_tokenizer_config()).eval()
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    out = tmp_path / "heads"
    args = [
        "--config",
        "configs/heads/tiny.yaml",
        f"tokenizer.checkpoint={tmp_path / 'tokenizer'}",
        f"output_dir={out}",
        "data.frame_size=32",
        "data.val_clips=8",
        "train.max_steps=40",
        "train.batch_size=8",
        "train.threads=2",
    ]
    train_heads_script.main(args)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 40 and 0.0 <= metrics["miou"] <= 1.0 and metrics["rmse"] > 0
    heads = TaskHeads.load(out, in_dim=tokenizer.dim)
    assert heads.segmentation.num_classes == 5 and (heads.depth.min_depth, heads.depth.max_depth) == (1.0, 16.0)
    val = build_dataset(DataConfig(frame_size=32, val_clips=8, val_num_frames=2), "val", 0)
    assert score_heads(tokenizer, heads, val, 8, torch.device("cpu")) == pytest.approx(
        {k: metrics[k] for k in ("miou", "rmse")}
    )
    torch.manual_seed(0)
    untrained = score_heads(
        tokenizer,
        TaskHeads(SegmentationHead(tokenizer.dim, 5), DepthHead(tokenizer.dim, 1.0, 16.0)),
        val,
        8,
        torch.device("cpu"),
    )
    assert metrics["miou"] > untrained["miou"] and metrics["rmse"] < untrained["rmse"]
    assert "heads on true validation features" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="already holds files"):
        train_heads_script.main(args)


def test_head_config_refuses_nothing_to_train_and_a_class_count_below_one():
    HeadsConfig(num_classes=None).validate()
    with pytest.raises(ConfigError, match="model.num_classes must be at least 1, or null"):
        HeadsConfig(num_classes=0).validate()
    with pytest.raises(ConfigError, match="nothing to train"):
        HeadsConfig(segmentation=False, depth=False).validate()
    with pytest.raises(ConfigError, match="train.max_steps must be at least 1"):
        HeadsTrainConfig(max_steps=0).validate()


@pytest.mark.parametrize(
    "other, key",
    [("heads.steps=5", "train.max_steps"), ("heads.lr=0.1", "train.lr"), ("heads.rgb=true", "model.rgb")],
)
def test_train_heads_keys_are_model_and_train_as_in_every_training_command(other, key):
    """`heads.*` names rollout.py's list, not these keys: each such name points to the key that holds it."""
    with pytest.raises(ConfigError, match=f"did you mean '{key}'"):
        load_config(train_heads_script.HeadsRunConfig, None, [other])
