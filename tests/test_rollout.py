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
from worldmodel.objectives import ObjectiveConfig
from worldmodel.pictures import ROLLOUT_CELL
from worldmodel.rgb_head import RGBHead, RGBHeadConfig
from worldmodel.world import WorldModelConfig, build_world_model

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
    # One row per series: the first model's under DESIGN.md's names, the other's under its own, no aliases.
    assert report["row_suffixes"] == {"bom": "", "flow": "_flow"}
    rows = [line.split(" | ")[:2] for line in (tmp_path / "report.md").read_text().splitlines() if line[:3] == "| 1"]
    assert len(rows) == len({tuple(row) for row in rows}) == 9
    for per_method in report["horizons"].values():
        for method, keys in DESIGN_METHODS.items():
            assert keys <= set(per_method[method]), method
        assert set(per_method) == {
            *DESIGN_METHODS,
            "world_samples",
            "world_best_flow",
            "world_mean_flow",
            "world_samples_flow",
        }
        values = per_method["world_best"]
        assert 0.0 <= values["miou"] <= 1.0 and values["rmse"] > 0 and values["feature_loss"] > 0
        assert per_method["copy_last"]["feature_loss"] > 0 and per_method["copy_last"]["energy_score"] > 0
        assert per_method["world_samples"]["energy_score"] > 0 and per_method["world_samples_flow"]["energy_score"] > 0
        # 3 clips are fewer than an interval needs: every figure's interval is null, not a misleading one.
        assert values["miou_ci95"] is None and per_method["world_samples"]["energy_score_ci95"] is None
        for samples in ("copy_last", "world_samples", "world_samples_flow"):
            terms = per_method[samples]
            assert terms["energy_score"] == pytest.approx(terms["distance_to_truth"] - 0.5 * terms["sample_spread"])
        assert per_method["copy_last"]["sample_spread"] == 0 and per_method["world_samples_flow"]["sample_spread"] > 0
        expected_gap = gap_closed(values["miou"], per_method["copy_last"]["miou"], per_method["present"]["miou"])
        assert (
            values["gap_closed_miou"] == pytest.approx(expected_gap)
            if expected_gap is not None
            else values["gap_closed_miou"] is None
        )
    plotted = rollout.horizon_series(report, "miou")
    assert {"world_best", "world_best_flow", "copy_last"} <= set(plotted) and "world_best_bom" not in plotted
    # 3 clips in batches of 2 and 1: only the batch of 2 has another clip's token to decode with.
    usage = report["token_usage"]
    assert usage["pairs"] == 2 and usage["own_loss"] > 0 and usage["copy_loss"] > 0
    assert usage["usage"] is None or usage["usage"] == pytest.approx(
        (usage["shuffled_loss"] - usage["own_loss"]) / (usage["copy_loss"] - usage["own_loss"])
    )
    printed = capsys.readouterr().out
    assert "token usage" in printed
    assert "| 2 | world_mean |" in printed and str(tmp_path / "clip0.png") in printed
    markdown = (tmp_path / "report.md").read_text()
    few_clips = "No intervals: 3 clips are fewer than the 20 a 95% percentile bootstrap over clips needs"
    assert few_clips in markdown and few_clips in printed
    # Shapes clips of stride 1 at 10 fps; the micro models were saved without a training run beside them.
    assert "3 shapes validation clips, frames 0.1 s apart; context 2 frames, then horizons 1, 2; K = 3" in markdown
    assert (
        f"World model flow ({saved['flow']}): rows `world_best_flow`, `world_mean_flow`, `world_samples_flow`; "
        "trained on an unrecorded spacing." in markdown
    )
    assert report["frame_spacing_s"] == [0.1, 0.1] and report["trained_frame_spacing_s"] == {"bom": None, "flow": None}

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


def test_rollout_on_a_miniature_vspw_tree(saved, tmp_path, monkeypatch):
    make_vspw(tmp_path / "vspw", num_frames=45)
    # Intervals from 2 clips here, to check that the two squares of each wide clip count as one clip.
    monkeypatch.setattr("worldmodel.evaluation.MIN_INTERVAL_CLIPS", 2)
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
        for figure in ("miou", "feature_loss"):
            low, high = per_method["world_mean"][figure + "_ci95"]
            assert low <= per_method["world_mean"][figure] <= high
    assert report["intervals"]["given"] and (tmp_path / "out" / "clip0.png").is_file()


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


def test_a_clip_is_pictured_with_its_truth_and_nothing_scored(saved, tmp_path, capsys):
    """`--clip FILE`: any video file gives futures.png and futures.gif (context, truth, K futures), no report."""
    write_video(tmp_path / "my_clip.mp4", num_frames=40)
    args = ("--clip", str(tmp_path / "my_clip.mp4"), "--horizon", "2", "--world-models", str(saved["bom"]))
    run_rollout({**saved, "heads": ""}, tmp_path / "out", *args)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["futures.gif", "futures.png"]
    picture = iio.imread(tmp_path / "out" / "futures.png")
    # Rows: the video, the truth and 3 samples; columns: 2 context frames and 2 imagined, each a 128-pixel cell.
    assert picture.shape[0] > 5 * ROLLOUT_CELL and picture.shape[1] > 4 * ROLLOUT_CELL
    assert iio.imread(tmp_path / "out" / "futures.gif", index=None).shape[0] == 4
    assert str(tmp_path / "out" / "futures.png") in capsys.readouterr().out

    # Two world models: one pair each, named after them.
    run_rollout({**saved, "heads": ""}, tmp_path / "two", *args, str(saved["flow"]))
    assert {path.name for path in (tmp_path / "two").iterdir()} == {
        f"futures_{name}.{suffix}" for name in ("bom", "flow") for suffix in ("png", "gif")
    }


@pytest.mark.parametrize(
    ("clip", "more", "fragment"),
    [
        ("missing.mp4", (), "missing.mp4 does not exist"),
        ("my_clip.mp4", ("--horizon", "9"), "too short for 11 frames 0.2 s apart"),
        ("not_a_video.mp4", (), "cannot read a clip from"),
    ],
)
def test_a_clip_that_cannot_be_pictured_is_refused_before_anything_is_written(saved, tmp_path, clip, more, fragment):
    write_video(tmp_path / "my_clip.mp4", num_frames=40)  # 1.6 s at 25 fps
    (tmp_path / "not_a_video.mp4").write_text("not a video")
    with pytest.raises(InputError, match=fragment):
        run_rollout(saved, tmp_path / "out", "--world-models", str(saved["bom"]), "--clip", str(tmp_path / clip), *more)
    assert not (tmp_path / "out").exists()


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


def test_intervals_over_clips_hold_every_figure_and_come_from_the_clips_own_statistics(saved):
    """20 clips in two batches: every figure gets a 95 % interval around it, and the per-clip statistics the
    bootstrap resamples add up, clip by clip, to the figures reported."""
    from tokenizer.data.shapes import ShapesClips, ShapesConfig
    from worldmodel.evaluation import CI, FIGURE_FROM_SUMS, MIN_INTERVAL_CLIPS

    tokenizer = Tokenizer.from_pretrained(saved["tokenizer"])
    clips = ShapesClips(ShapesConfig(frame_size=32), 3, seed=0, split="val", num_clips=MIN_INTERVAL_CLIPS)
    evaluator = RolloutEvaluator(
        tokenizer,
        {"bom": micro_world(tokenizer)},
        TaskHeads.load(saved["heads"]),
        RolloutEvalConfig(context=2, num_samples=3, num_pictures=0),
        torch.device("cpu"),
    )
    for start in (0, 10):
        evaluator.update(torch.utils.data.default_collate([clips[i] for i in range(start, start + 10)]))
    report = evaluator.report("shapes")
    assert report["intervals"]["given"] and report["num_clips"] == MIN_INTERVAL_CLIPS
    per_method = report["horizons"]["1"]
    for method, values in per_method.items():
        for figure in ("miou", "rmse", "feature_loss", "energy_score", "gap_closed_miou", "distance_to_truth"):
            if values.get(figure) is None:
                continue
            low, high = values[figure + CI]
            assert low <= values[figure] <= high, (method, figure)
        stats = evaluator.scores[1][method].clip_stats if method in evaluator.scores[1] else {}
        for figure, kept in stats.items():
            if values.get(figure) is not None:
                summed = kept.per_clip(MIN_INTERVAL_CLIPS).sum(0)
                assert FIGURE_FROM_SUMS[figure](summed).item() == pytest.approx(values[figure], rel=1e-9)
    assert per_method["present"]["miou" + CI] is not None and per_method["world_samples"]["energy_score" + CI]
    # Resampling is seeded: the same clips give the same intervals.
    assert evaluator.report("shapes")["horizons"] == report["horizons"]
    assert "[low, high]: 95% percentile bootstrap over clips (1,000 resamples of the 20 clips, seed 0)." in (
        rollout.report_header({**report, "models": {"bom": "x"}, "trained_frame_spacing_s": {"bom": None}})
    )
    table = rollout.report_table(report)
    low, high = per_method["world_best"]["feature_loss" + CI]
    assert f"{per_method['world_best']['feature_loss']:.4f} [{low:.4f}, {high:.4f}]" in table


def test_the_training_spacing_of_a_world_model_is_read_and_a_different_one_warned_about(saved, tmp_path, capsys):
    """A run folder's final/ beside the run's config.yaml: rollout.py reads the spacing the model trained on (through
    a token cache's plan) and warns, in the report and on stdout, when the clips it scores are spaced otherwise."""
    from worldmodel.token_clips import PLAN

    cache = tmp_path / "tokens"
    cache.mkdir()
    (cache / PLAN).write_text(json.dumps({"data": {"source": "shapes", "shapes_strides": [2]}}))
    run = tmp_path / "world_run"
    micro_world(Tokenizer.from_pretrained(saved["tokenizer"])).save_pretrained(run / "final")
    (run / "config.yaml").write_text(f"data:\n  source: tokens\n  root: {cache}\n  val_source: shapes\n")
    assert rollout.trained_spacing(str(run / "final")) == pytest.approx((0.2, 0.2))
    assert rollout.trained_spacing(str(saved["bom"])) is None  # no run beside it
    assert rollout.trained_spacing("Amazon-FAR/deltaworld-kinetics") == pytest.approx((1 / 25, 1 / 3))

    args = ("--world-models", str(run / "final"), "--val-clips", "2", "--horizon", "1", "--pictures", "0")
    run_rollout(saved, tmp_path / "tenth", *args)  # Shapes' default stride: 1 step of 0.1 s
    warning = "warning: the clips scored have frames 0.1 s apart, but world model bom was trained on frames 0.2 s apart"
    assert warning in (tmp_path / "tenth" / "report.md").read_text() and warning in capsys.readouterr().out
    report = json.loads((tmp_path / "tenth" / "report.json").read_text())
    assert report["trained_frame_spacing_s"] == {"bom": pytest.approx([0.2, 0.2])}
    run_rollout(saved, tmp_path / "fifth", *args, "--shapes-strides", "2")
    markdown = (tmp_path / "fifth" / "report.md").read_text()
    assert "warning: the clips scored" not in markdown and "frames 0.2 s apart; context 2" in markdown
    assert "trained on frames 0.2 s apart." in markdown and "warning: the clips" not in capsys.readouterr().out

    # A run whose token cache has gone still gets its report, which says the spacing is not known.
    (cache / PLAN).unlink()
    run_rollout(saved, tmp_path / "gone", *args)
    assert "is not known" in capsys.readouterr().out
    assert "trained on an unrecorded spacing" in (tmp_path / "gone" / "report.md").read_text()


def test_frame_spacing_of_every_source_as_its_configuration_fixes_it(tmp_path):
    from tokenizer.data.episodes import episode_path
    from tokenizer.data.registry import DataConfig, frame_spacing
    from tokenizer.runtime.files import save_safetensors

    assert frame_spacing(DataConfig(shapes_strides=[1, 3]), "train") == pytest.approx((0.1, 0.3))
    assert frame_spacing(DataConfig(source="videos"), "train") == pytest.approx((1 / 25, 1 / 3))
    assert frame_spacing(DataConfig(source="kinetics"), "val") == pytest.approx((0.2, 0.2))
    for source, seconds in (("vspw", 0.2), ("cityscapes", 0.1875), ("kitti", 0.2)):
        assert frame_spacing(DataConfig(source=source), "val") == pytest.approx((seconds, seconds))
    # Validation reads data.val_source when it is set, as build_dataset does.
    assert frame_spacing(DataConfig(source="videos", val_source="shapes"), "val") == pytest.approx((0.1, 0.1))
    timestamps = torch.arange(5, dtype=torch.float64) * 0.05
    save_safetensors(
        {"timestamps": timestamps, "frames": torch.zeros(5, 3, 4, 4, dtype=torch.uint8)}, episode_path(tmp_path, 0)
    )
    assert frame_spacing(DataConfig(source="episodes", root=str(tmp_path)), "train") == pytest.approx((0.05, 0.05))
    with pytest.raises(ConfigError, match="data.source=tokens needs data.root"):
        frame_spacing(DataConfig(source="tokens"), "train")
