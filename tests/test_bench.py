"""`python -m benchmarks.bench --quick` makes every number of its report (timings are never asserted), its
planning speed at a realistic size is reported from what it measured, and `benchmarks.token_headroom` fits
tokens from the encoder's."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from benchmarks import bench
from benchmarks.flops import SCALES, planning_step_flops, planning_worlds
from benchmarks.report import SEARCH_LABELS, scale_planning_table
from benchmarks.speed import SEARCHES, scale_planning
from benchmarks.timing import FULL, QUICK
from benchmarks.token_headroom import headroom, optimised_tokens
from benchmarks.training import TOP_OPS
from conftest import micro_tokenizer_config, random_frames
from envs.planners import PlannerConfig
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
    "planning_tiny",  # --quick times planning at tiny; a full run at Settings.planning_scale, vits_224
    "train_clips_per_s",
    "bom256_over_bom1_step_time",
    "world_model_training",
    "mfu_train_tokenizer_tiny",
    "phases",
    "peak_memory_mb",
    "targets",
)


def numbers(node: dict, prefix: str = ""):
    """(dotted key, value) of every int or float leaf under the dicts of `node`, configuration echoes
    (a key ending in `settings`, whose entries may be 0 or off) left out."""
    for key, value in node.items():
        if key.endswith("settings"):
            continue
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
    assert set(report["latency_ms_per_planning_step"]) == {
        "deltaworld_tiny",
        "deltaworld_features_tiny",
        "dinoworld_tiny",
    }
    assert set(report["train_clips_per_s"]) == {"tokenizer_tiny", "world_model_tiny"}
    assert report["settings"]["planning_scale"] == "tiny"
    assert set(report["planning_tiny"]["seconds_per_planning_step"]) == set(SEARCHES)
    assert "| DINOWorld (every patch predicted) |" in (tmp_path / "report.md").read_text()

    assert report["train_tokenizer_tiny"]["pooled_step_ms"] > 0  # the step on a FeaturePool's features
    ops = report["train_tokenizer_tiny"]["top_ops"]
    assert 0 < len(ops) <= TOP_OPS and any(op["op"] == "aten::mm" for op in ops)
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
        "dinoworld_over_deltaworld_token_planning_step_tiny",
        "world_model_cached_over_on_the_fly_speedup",
    ]
    assert set(report["world_model_training"]) == {"cached_over_on_the_fly_speedup", "cache_mib_per_1000_clips"}
    for entry in report["targets"]:
        assert set(entry) == {"name", "value", "target", "met"}
        assert isinstance(entry["met"], bool) and math.isfinite(entry["value"]) and entry["value"] > 0


def test_scale_planning_reports_ratios_of_what_it_measured():
    """At tiny widths: every method is timed, and each figure derives from the timings and FLOP counts the
    section reports (a planning step is `iterations` timed CEM iterations)."""
    planner = PlannerConfig(horizon=2, candidates=4, iterations=2, elites=2, context=3)
    section = scale_planning("tiny", planner, QUICK, torch.device("cpu"))

    seconds, flops = section["seconds_per_planning_step"], section["flops_per_planning_step"]
    assert set(seconds) == set(flops) == set(section["seconds_per_iteration"]) == set(SEARCHES)
    for name in SEARCHES:
        times = section["seconds_per_iteration"][name]
        assert len(times) == section["settings"]["repeats"][name] and all(t > 0 for t in times)
        assert seconds[name] == pytest.approx(planner.iterations * statistics.median(times))
        assert section["achieved_gflops"][name] == pytest.approx(flops[name] / seconds[name] / 1e9)
        observe = section["seconds_to_observe"]["dinoworld" if name == "dinoworld" else "deltaworld"]
        assert section["seconds_per_env_step"][name] == pytest.approx(seconds[name] + observe)
    env_step = section["seconds_per_env_step"]
    for ratios, values in (
        (section["time_ratios"], seconds),
        (section["flop_ratios"], flops),
        (section["env_step_time_ratios"], env_step),
    ):
        assert ratios["dinoworld_over_deltaworld_token"] == pytest.approx(
            values["dinoworld"] / values["deltaworld_token"]
        )
        assert ratios["dinoworld_over_deltaworld_feature"] == pytest.approx(
            values["dinoworld"] / values["deltaworld_feature"]
        )
        assert ratios["deltaworld_feature_over_token"] == pytest.approx(
            values["deltaworld_feature"] / values["deltaworld_token"]
        )
    whole = section["deltaworld_token_whole_step"]
    assert whole["over_iterations_times_one"] == pytest.approx(whole["seconds"] / seconds["deltaworld_token"])
    # The same search FLOPs as planning_step_flops counts on its own, and the token cost is the cheapest search.
    counted = planning_step_flops(planner, SCALES["tiny"])
    assert flops == counted["search"]
    # Taking in a frame with the context's tokens kept, and by restarting from every context frame: DeltaWorld's
    # kept tokens spare the encoder on the context's middle frame; DINOWorld's "tokens" are its features.
    for key in ("observe", "observe_restarting"):
        assert section[f"flops_to_{key}"] == counted[key]
        assert set(section[f"seconds_to_{key}"]) == set(counted[key]) == {"deltaworld", "dinoworld"}
    observe, restart = counted["observe"], counted["observe_restarting"]
    assert observe["deltaworld"] < restart["deltaworld"] and observe["dinoworld"] == restart["dinoworld"]
    assert flops["deltaworld_token"] < flops["deltaworld_feature"] and flops["deltaworld_token"] < flops["dinoworld"]
    settings = section["settings"]
    assert (settings["scale"], settings["frame_size"], settings["patches"], settings["planner"]) == (
        "tiny",
        64,
        64,
        vars(planner),
    )
    assert settings["device"] == "cpu" and settings["dtype"] == "float32"
    table = "\n".join(scale_planning_table(section))
    assert all(f"| {label} |" in table for label in SEARCH_LABELS.values())
    assert "Observing (taking in the new frame" in table and "restarting" in table


def test_full_run_plans_at_a_vit_s_size():
    """A full run times planning at ViT-S/16 on 224 px frames: 196 patches, and every model 384 wide (built on
    the meta device here, so no weights are made)."""
    assert FULL.planning_scale == "vits_224"
    tokenizer, delta, dino, size = planning_worlds(SCALES["vits_224"], "meta")
    assert size == 224 and tokenizer.backbone.grid(size, size) == (14, 14) and tokenizer.dim == 384
    assert tokenizer.config.backbone.num_layers == tokenizer.config.model.num_layers == 12
    for world in (delta, dino):
        assert (
            world.config.predictor.hidden_size,
            world.config.predictor.num_layers,
            world.config.predictor.num_heads,
        ) == (384, 12, 6)
    assert delta.readout is not None and dino.config.kind == "dinoworld"


def test_token_headroom_fits_tokens_from_the_encoders():
    """Fitting starts at the encoder's tokens and lowers the decoding loss (a random decoder barely reads its token, so
    by little)."""
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
    assert torch.equal(
        optimised_tokens(tokenizer.deltatok, features[:, 0], features[:, 1], rope, steps=0, lr=0.05), encoded
    )
    assert set(result["gap_closed_miou"]) == {"own_token", "optimised_token"}
    assert set(result["miou"]) == {"present", "copy_previous", "own_token", "optimised_token"}
    assert all(0 <= value <= 1 for value in result["miou"].values())
