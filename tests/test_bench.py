"""`python -m benchmarks.bench --quick` makes every number of its report (timings are never asserted), and
`benchmarks.token_headroom` fits tokens from the encoder's."""

from __future__ import annotations

import json
import math

import torch

from conftest import micro_tokenizer_config, random_frames

from benchmarks import bench
from benchmarks.token_headroom import headroom, optimised_tokens
from tokenizer.model import Tokenizer
from worldmodel.heads import SegmentationHead, TaskHeads

TOP_LEVEL_KEYS = (
    "machine",
    "matmul_peak_gflops",
    "params",
    "flops_per_imagined_frame",
    "flop_ratios",
    "latency_ms_per_imagined_frame",
    "latency_ms_per_planning_step",
    "train_clips_per_s",
    "bom256_over_bom1_step_time",
    "world_model_training",
    "mfu_train_tokenizer_tiny",
    "phases",
    "peak_memory_mb",
    "targets",
)


def numbers(node: dict, prefix: str = ""):
    """(dotted key, value) of every int or float leaf under the dicts of `node`."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from numbers(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


def test_quick_benchmark_reports_every_measurement(tmp_path):
    threads = torch.get_num_threads()
    try:
        # One thread: on a machine busy with other work, two OpenMP threads can make this run slow.
        bench.main(["--out", str(tmp_path), "--quick", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    report = json.loads((tmp_path / "report.json").read_text())
    assert "| measurement | value |" in (tmp_path / "report.md").read_text()

    for key in TOP_LEVEL_KEYS:
        assert key in report, key
    for key in ("cpu_model", "cores", "torch", "python", "accelerate", "device", "threads"):
        assert key in report["machine"], key
    for scale in ("tiny", "vitb_512"):
        flops = report["flops_per_imagined_frame"][scale]
        assert set(flops) == {"deltaworld_predictor", "deltaworld_decode", "dinoworld"}
        assert flops["deltaworld_predictor"] < flops["deltaworld_decode"]  # the decode step includes the predictor
        assert set(report["params"][scale]) == {"backbone", "deltatok", "deltaworld", "dinoworld"}
        assert "predictor_over_decode" in report["flop_ratios"][scale]
    assert report["flop_settings"]["vitb_512"]["patches"] == 1024
    assert report["flops_meta_matches_real_tiny"] is True
    assert set(report["latency_ms_per_imagined_frame"]) == {"deltaworld_tiny", "dinoworld_tiny"}
    assert set(report["latency_ms_per_planning_step"]) == {"deltaworld_tiny", "deltaworld_features_tiny", "dinoworld_tiny"}
    assert set(report["train_clips_per_s"]) == {"tokenizer_tiny", "world_model_tiny"}

    assert report["train_tokenizer_tiny"]["pooled_step_ms"] > 0  # the step on a FeaturePool's features
    ops = report["train_tokenizer_tiny"]["top_ops"]
    assert 0 < len(ops) <= bench.TOP_OPS and any(op["op"] == "aten::mm" for op in ops)
    assert all(0 < op["share"] <= 1 and op["calls_per_step"] > 0 for op in ops)
    assert [op["ms_per_step"] for op in ops] == sorted((op["ms_per_step"] for op in ops), reverse=True)
    assert f"| {ops[0]['op']} |" in (tmp_path / "report.md").read_text()

    values = dict(numbers(report))
    assert len(values) > 40
    for key, value in values.items():
        if key.endswith("other_processes_cpu_share"):  # 0 on an idle machine
            assert value >= 0, f"{key} = {value}"
        else:
            assert math.isfinite(value) and value > 0, f"{key} = {value}"
    assert isinstance(report["disturbed_phases"], list)

    names = [t["name"] for t in report["targets"]]
    assert names == [
        "predictor_over_decode_flops_vitb_512",
        "bom256_over_bom1_step_time",
        "mfu_train_tokenizer_tiny",
        "world_model_cached_over_on_the_fly_speedup",
    ]
    assert set(report["world_model_training"]) == {"cached_over_on_the_fly_speedup", "cache_mib_per_1000_clips"}
    for entry in report["targets"]:
        assert set(entry) == {"name", "value", "target", "met"}
        assert isinstance(entry["met"], bool) and math.isfinite(entry["value"]) and entry["value"] > 0


def test_token_headroom_fits_tokens_from_the_encoders():
    """Fitting starts at the encoder's tokens and lowers the decoding loss (a random decoder barely reads its token, so by little)."""
    torch.manual_seed(0)
    cfg = micro_tokenizer_config()
    cfg.model.layer_scale_init = 1.0  # at 1e-5 the decoder would barely read any token
    tokenizer = Tokenizer.build(cfg)
    frames = random_frames(4, 2)
    labels = torch.randint(0, 3, (4, 32, 32), generator=torch.Generator().manual_seed(0))
    heads = TaskHeads(segmentation=SegmentationHead(32, 3).eval())
    result = headroom(tokenizer, frames, labels, heads, steps=30, lr=0.05)
    assert result["optimised_token_loss"] < result["own_token_loss"]
    assert all(parameter.grad is None for parameter in tokenizer.parameters())
    features = tokenizer.features(frames)
    rope = tokenizer.rope((4, 4), torch.device("cpu"))
    with torch.no_grad():
        encoded = tokenizer.deltatok.encode(features[:, 0], features[:, 1], rope)
    assert torch.equal(optimised_tokens(tokenizer.deltatok, features[:, 0], features[:, 1], rope, steps=0, lr=0.05), encoded)
    assert set(result["gap_closed_miou"]) == {"own_token", "optimised_token"}
    assert set(result["miou"]) == {"present", "copy_previous", "own_token", "optimised_token"}
    assert all(0 <= value <= 1 for value in result["miou"].values())
