"""rollout.py and worldmodel.evaluation on micro models built in-process (random weights, no training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from conftest import REPO, micro_predictor_config, micro_tokenizer_config
from footage import make_vspw, write_video
from tokenizer.model import Tokenizer
from tokenizer.runtime.cli import run_cli
from tokenizer.runtime.errors import ConfigError, InputError
from worldmodel.evaluation import RolloutEvalConfig, RolloutEvaluator, gap_closed
from worldmodel.heads import DepthHead, SegmentationHead, TaskHeads
from worldmodel.loading import build_world_model
from worldmodel.objectives import ObjectiveConfig
from worldmodel.pictures import ROLLOUT_CELL
from worldmodel.rgb_head import RGBHead, RGBHeadConfig
from worldmodel.world import WorldModelConfig

sys.path.insert(0, str(REPO))
import rollout  # noqa: E402

DESIGN_METHODS = {
    "present": {"miou", "rmse"},
    "copy_last": {"miou", "rmse", "feature_loss"},
    "tokenizer": {"miou", "rmse", "feature_loss"},
    "world_best": {"miou", "rmse", "feature_loss", "gap_closed_miou"},
    "world_mean": {"miou", "rmse", "feature_loss", "gap_closed_miou"},
}


def micro_world(tokenizer: Tokenizer, kind: str = "bom"):
    config = WorldModelConfig(
        predictor=micro_predictor_config(),
        objective=ObjectiveConfig(kind=kind, num_hypotheses=8, selection_chunk=8, sampling_steps=2),
        num_samples=3,
    )
    torch.manual_seed(1)
    return build_world_model(tokenizer, config).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """A micro tokenizer, two micro world models (bom, flow) and Shapes-sized heads, saved like the tiny runs."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    tokenizer = Tokenizer.build(micro_tokenizer_config()).eval()
    tokenizer.save_pretrained(root / "tokenizer")
    micro_world(tokenizer, "bom").save_pretrained(root / "bom")
    micro_world(tokenizer, "flow").save_pretrained(root / "flow")
    TaskHeads(SegmentationHead(tokenizer.dim, 5), DepthHead(tokenizer.dim, 1.0, 16.0)).save(root / "heads")
    vspw_heads = root / "vspw_heads"
    TaskHeads(SegmentationHead(tokenizer.dim, 124)).save(vspw_heads)
    return {
        "tokenizer": root / "tokenizer",
        "bom": root / "bom",
        "flow": root / "flow",
        "heads": root / "heads",
        "vspw_heads": vspw_heads,
    }


def run_rollout(saved, out: Path, *extra: str) -> None:
    rollout.main(
        [
            "--tokenizer",
            str(saved["tokenizer"]),
            "--heads",
            str(saved["heads"]),
            "--frame-size",
            "32",
            "--context",
            "2",
            "--samples",
            "3",
            "--val-clips",
            "3",
            "--batch-size",
            "2",
            "--threads",
            "2",
            "--out",
            str(out),
            *extra,
        ]
    )


def test_report_structure_pictures_and_two_models(saved, tmp_path, capsys):
    run_rollout(
        saved,
        tmp_path,
        "--world-models",
        str(saved["bom"]),
        str(saved["flow"]),
        "--horizon",
        "2",
        "1",
        "--pictures",
        "1",
    )
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["dataset"], report["context"], report["num_samples"], report["num_clips"]) == ("shapes", 2, 3, 3)
    assert list(report["horizons"]) == ["1", "2"]
    for per_method in report["horizons"].values():
        for method, keys in DESIGN_METHODS.items():
            assert keys <= set(per_method[method]), method
        assert {"world_best_bom", "world_mean_flow"} <= set(per_method)
        assert per_method["world_best"] == per_method["world_best_bom"]
        values = per_method["world_best"]
        assert 0.0 <= values["miou"] <= 1.0 and values["rmse"] > 0 and values["feature_loss"] > 0
        assert per_method["copy_last"]["feature_loss"] > 0 and per_method["copy_last"]["energy_score"] > 0
        assert per_method["world_samples"] == per_method["world_samples_bom"]
        assert per_method["world_samples_flow"]["energy_score"] > 0
        for samples in ("copy_last", "world_samples_bom", "world_samples_flow"):
            terms = per_method[samples]
            assert terms["energy_score"] == pytest.approx(terms["distance_to_truth"] - 0.5 * terms["sample_spread"])
        assert per_method["copy_last"]["sample_spread"] == 0 and per_method["world_samples_flow"]["sample_spread"] > 0
        expected_gap = gap_closed(values["miou"], per_method["copy_last"]["miou"], per_method["present"]["miou"])
        assert (
            values["gap_closed_miou"] == pytest.approx(expected_gap)
            if expected_gap is not None
            else values["gap_closed_miou"] is None
        )
    # Each series is plotted once: the first model's rows under its own name, not twice.
    plotted = rollout.horizon_series(report, "miou", several_models=True)
    assert {"world_best_bom", "world_best_flow", "copy_last"} <= set(plotted) and "world_best" not in plotted
    assert "world_best" in rollout.horizon_series(report, "miou", several_models=False)
    # 3 clips in batches of 2 and 1: only the batch of 2 has another clip's token to decode with.
    usage = report["token_usage"]
    assert usage["pairs"] == 2 and usage["own_loss"] > 0 and usage["copy_loss"] > 0
    assert usage["usage"] is None or usage["usage"] == pytest.approx(
        (usage["shuffled_loss"] - usage["own_loss"]) / (usage["copy_loss"] - usage["own_loss"])
    )
    printed = capsys.readouterr().out
    assert "token usage" in printed
    assert "| 2 | world_mean |" in printed and str(tmp_path / "clip0.png") in printed
    assert "world_mean" in (tmp_path / "report.md").read_text()

    picture = iio.imread(tmp_path / "clip0.png")
    assert picture.ndim == 3 and picture.shape[2] == 3 and picture.shape[0] > 128 * 8
    animation = iio.imread(tmp_path / "clip0.gif", index=None)
    assert animation.shape[0] == 2 + 2  # context + the longest horizon
    for metric in ("miou", "rmse", "feature_loss"):
        assert iio.imread(tmp_path / f"{metric}_vs_horizon.png").shape[2] in (3, 4)


def test_horizon_one_of_a_shared_rollout_equals_a_separate_rollout(saved):
    """One rollout serves every horizon: step 1 of a 2-step rollout scores like a 1-step rollout (same seed, same
    noise)."""
    tokenizer = Tokenizer.from_pretrained(saved["tokenizer"])
    heads = TaskHeads.load(saved["heads"])
    world = micro_world(tokenizer)
    from tokenizer.data.shapes import ShapesClips, ShapesConfig

    clips = ShapesClips(ShapesConfig(frame_size=32), 4, seed=0, split="val", num_clips=2)
    batch = torch.utils.data.default_collate([clips[0], clips[1]])
    shared = RolloutEvaluator(
        tokenizer,
        {"bom": world},
        heads,
        RolloutEvalConfig(context=2, horizons=[1, 2], num_samples=3),
        torch.device("cpu"),
    )
    shared.update(batch)
    bounds_shared = shared.report("shapes")["horizons"]["1"]
    short = {k: v[:, :3] for k, v in batch.items()}
    alone = RolloutEvaluator(
        tokenizer, {"bom": world}, heads, RolloutEvalConfig(context=2, horizons=[1], num_samples=3), torch.device("cpu")
    )
    alone.update(short)
    bounds_alone = alone.report("shapes")["horizons"]["1"]
    # The generator draws step 1's noise first either way, so even the imagined samples agree.
    for method in ("present", "copy_last", "tokenizer", "world_best", "world_mean"):
        assert bounds_shared[method] == pytest.approx(bounds_alone[method])


def test_rollout_on_a_miniature_vspw_tree(saved, tmp_path):
    make_vspw(tmp_path / "vspw", num_frames=45)
    run_rollout(
        {**saved, "heads": saved["vspw_heads"]},
        tmp_path / "out",
        "--world-models",
        str(saved["bom"]),
        "--dataset",
        "vspw",
        "--data-root",
        str(tmp_path / "vspw"),
        "--frame-size",
        "16",
        "--horizon",
        "1",
        "3",
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dataset"] == "vspw" and report["num_clips"] == 2
    for per_method in report["horizons"].values():
        assert per_method["present"]["rmse"] is None  # no depth head and no depth labels
        assert 0.0 <= per_method["world_mean"]["miou"] <= 1.0
    assert (tmp_path / "out" / "clip0.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--horizon", "0"], "horizon must be at least 1"),
        (["--shapes-strides", "0"], "data.shapes_strides must be a non-empty list of steps of at least 1, got [0]"),
        (["data.val_clips=0"], "data.val_clips must be at least 1, got 0"),
        (["data.num_clips=2"], "unknown config key 'data.num_clips'; did you mean 'data.val_clips'?"),
        (["data.batch_size=2"], "unknown config key 'data.batch_size'; did you mean 'batch_size'?"),
        (["data.val_source=vspw"], "data.val_source is for training runs"),
        (["eval.contxt=2"], "unknown config key 'eval.contxt'; did you mean 'eval.context'?"),
        (["--world-model", "{missing}"], "unknown flag --world-model; did you mean --world-models?"),
        (["--num-clips", "2"], "unknown flag --num-clips; did you mean --val-clips?"),
        (
            ["tokenizer={missing}"],
            "config key 'tokenizer' is a section (checkpoint, backbone, model), not a value; did",
        ),
        (["backbone={missing}"], "unknown config key 'backbone'; did you mean 'tokenizer.backbone.name'?"),
        (["--tokenizer", "{missing}"], "does not exist"),
        (["--config", "{missing}"], "does not exist"),
        (["--world-models", "{missing}"], "does not exist"),
        (["--heads", "{missing}"], "does not exist"),
        (
            ["--dataset", "vspw", "--data-root", "{vspw}", "--frame-size", "16", "--horizon", "20"],
            "longer than any vspw clip",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(saved, tmp_path, monkeypatch, capsys, args, message):
    make_vspw(tmp_path / "vspw", num_frames=45)
    args = [a.format(missing=tmp_path / "nowhere", vspw=tmp_path / "vspw") for a in args]
    base = [
        "--tokenizer",
        str(saved["tokenizer"]),
        "--world-models",
        str(saved["bom"]),
        "--heads",
        str(saved["heads"]),
        "--out",
        str(tmp_path / "o"),
    ]
    monkeypatch.setattr(sys, "argv", ["rollout.py", *base, *args])
    with pytest.raises(SystemExit) as exit_info:
        run_cli(rollout.main)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_samples": 0}, "eval.num_samples must be at least 1, or null"),
        ({"context": 0}, "eval.context must be at least 1"),
        ({"protocol": "sometimes"}, "eval.protocol 'sometimes'"),
    ],
)
def test_eval_config_checks_are_config_errors(options, message):
    RolloutEvalConfig(num_samples=None).validate()
    with pytest.raises(ConfigError, match=message):
        RolloutEvalConfig(**options).validate()


def test_evaluation_runs_the_backbone_once_per_window_for_every_method_and_model(saved):
    tokenizer = Tokenizer.from_pretrained(saved["tokenizer"])
    worlds = {
        "bom": micro_world(Tokenizer.from_pretrained(saved["tokenizer"]), "bom"),
        "flow": micro_world(tokenizer, "flow"),
    }
    from tokenizer.data.shapes import ShapesClips, ShapesConfig

    clips = ShapesClips(ShapesConfig(frame_size=32), 4, seed=0, split="val", num_clips=2)
    batch = torch.utils.data.default_collate([clips[0], clips[1]])
    clip_passes = []
    backbones = {id(m.backbone): m.backbone for m in [tokenizer, *(w.tokenizer for w in worlds.values())]}
    for backbone in backbones.values():
        # Black-frame features (one frame, cached) are not a pass over the clips.
        backbone.register_forward_pre_hook(
            lambda module, args: clip_passes.append(args[0].shape) if args[0].shape[1] > 1 else None
        )
    config = RolloutEvalConfig(context=2, horizons=[1, 2], num_samples=3)
    evaluator = RolloutEvaluator(tokenizer, worlds, TaskHeads.load(saved["heads"]), config, torch.device("cpu"))
    evaluator.update(batch)
    assert len(clip_passes) == 1

    # Handing a world model the features changes nothing it imagines.
    frames, times = batch["frames"], batch["timestamps"]
    given = worlds["bom"].rollout(
        frames, times, 2, 2, 3, generator=torch.Generator().manual_seed(0), features=tokenizer.features(frames)
    )
    computed = worlds["bom"].rollout(frames, times, 2, 2, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(given["features"], computed["features"]) and torch.equal(given["targets"], computed["targets"])


def test_config_file_overrides_and_flags_compose(saved, tmp_path):
    """Schema defaults <- --config file <- dotted overrides <- flags, as every command takes them."""
    config = tmp_path / "rollout.yaml"
    config.write_text(
        f"tokenizer:\n  checkpoint: {saved['tokenizer']}\nheads: [{saved['heads']}]\n"
        f"world_models: [{saved['bom']}]\neval:\n  context: 3\n  horizons: [2]\n"
    )
    run = rollout.parse_args(
        ["--config", str(config), "eval.horizons=[1,2]", "--horizon", "3", "1", "data.frame_size=32", "--samples", "4"]
    )
    assert (
        run.eval.horizons == [1, 3]
        and run.eval.context == 3
        and run.eval.num_samples == 4
        and run.data.frame_size == 32
    )
    assert run.eval.protocol == "one_rollout" and run.world_models == [str(saved["bom"])]
    assert run.tokenizer.checkpoint == str(saved["tokenizer"]) and run.tokenizer.backbone_override is None
    assert rollout.parse_args(["--backbone", "/models/dinov3"]).tokenizer.backbone_override == "/models/dinov3"
    assert rollout.parse_args(["--dataset", "kitti"]).eval.protocol == "per_horizon"
    # Without --samples the world model's own K (3 for the micro models) is used and reported.
    rollout.main(
        [
            "--config",
            str(config),
            "--frame-size",
            "32",
            "--val-clips",
            "2",
            "--pictures",
            "0",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["num_samples"] == 3 and list(report["horizons"]) == ["2"] and report["context"] == 3
    assert report["protocol"] == "one_rollout"


def test_unlabelled_footage_is_scored_by_feature_loss_and_pictured_without_heads(saved, tmp_path):
    """A user's own videos: no labels, no heads; feature losses, energy scores and PCA pictures still come out."""
    for name in ("a", "b"):
        write_video(tmp_path / "videos" / f"{name}.mp4", num_frames=30)
    run_rollout(
        {**saved, "heads": ""},
        tmp_path / "out",
        "--world-models",
        str(saved["bom"]),
        "--dataset",
        "videos",
        "--data-root",
        str(tmp_path / "videos"),
        "--frame-size",
        "16",
        "--horizon",
        "1",
        "2",
        "--pictures",
        "1",
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dataset"] == "videos" and report["num_clips"] == 2
    for per_method in report["horizons"].values():
        assert per_method["present"]["miou"] is None and per_method["world_best"]["rmse"] is None
        assert per_method["world_best"]["feature_loss"] > 0 and per_method["copy_last"]["energy_score"] > 0
        assert per_method["world_samples"]["energy_score"] > 0
    assert iio.imread(tmp_path / "out" / "clip0.png").shape[2] == 3


def test_labels_that_no_head_can_score_are_refused(saved, tmp_path):
    depth_only = tmp_path / "depth_heads"
    TaskHeads(None, DepthHead(Tokenizer.from_pretrained(saved["tokenizer"]).dim, 1.0, 16.0)).save(depth_only)
    make_vspw(tmp_path / "vspw", num_frames=45)
    with pytest.raises(InputError, match="no task in common"):
        run_rollout(
            {**saved, "heads": depth_only},
            tmp_path / "out",
            "--world-models",
            str(saved["bom"]),
            "--dataset",
            "vspw",
            "--data-root",
            str(tmp_path / "vspw"),
            "--frame-size",
            "16",
        )


def test_an_rgb_head_adds_rgb_rows_to_the_pictures_and_leaves_the_scores(saved, tmp_path):
    tokenizer = Tokenizer.from_pretrained(saved["tokenizer"])
    plain = TaskHeads.load(saved["heads"])
    torch.manual_seed(0)
    rgb = RGBHead(
        tokenizer.dim, tokenizer.backbone.feature_norm, RGBHeadConfig(32, 1, 2, 64, patch_size=8, image_size=32)
    )
    TaskHeads(plain.segmentation, plain.depth, rgb).save(tmp_path / "rgb_heads")
    args = ("--world-models", str(saved["bom"]), "--horizon", "1", "--pictures", "1", "--val-clips", "1")
    run_rollout(saved, tmp_path / "plain", *args)
    run_rollout({**saved, "heads": tmp_path / "rgb_heads"}, tmp_path / "rgb", *args)
    reports = [json.loads((tmp_path / name / "report.json").read_text()) for name in ("plain", "rgb")]
    assert reports[0]["horizons"] == reports[1]["horizons"]
    picture, rgb_picture = (iio.imread(tmp_path / name / "clip0.png") for name in ("plain", "rgb"))
    assert rgb_picture.shape[0] == picture.shape[0] + 3 * ROLLOUT_CELL  # truth, best and mean RGB rows
    animation, rgb_animation = (iio.imread(tmp_path / name / "clip0.gif", index=None) for name in ("plain", "rgb"))
    assert rgb_animation.shape[2] == animation.shape[2] + 3 * ROLLOUT_CELL

    # What the rows show: the head's frames of every kept feature set, the real frames' size, not one flat colour.
    from tokenizer.data.shapes import ShapesClips, ShapesConfig

    clips = ShapesClips(ShapesConfig(frame_size=32), 3, seed=0, split="val", num_clips=1)
    heads = TaskHeads.load(tmp_path / "rgb_heads", feature_norm=tokenizer.backbone.feature_norm)
    evaluator = RolloutEvaluator(
        tokenizer,
        {"bom": micro_world(tokenizer)},
        heads,
        RolloutEvalConfig(context=2, num_pictures=1),
        torch.device("cpu"),
    )
    evaluator.update(torch.utils.data.default_collate([clips[0]]))
    maps = evaluator.pictures[0].maps
    assert maps["truth"]["rgb"].shape == (3, 3, 32, 32) and maps["best"]["rgb"].shape == (1, 3, 32, 32)
    assert maps["truth"]["rgb"].dtype == torch.uint8 and maps["truth"]["rgb"].float().std() > 1
    assert torch.equal(maps["truth"]["rgb"], rgb.render(tokenizer.features(clips[0]["frames"][None])[0], (4, 4)))
