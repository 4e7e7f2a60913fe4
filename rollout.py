"""Imagine futures with trained world models and score them with task heads against two bounds.

    python rollout.py --horizon 3
    python rollout.py --config configs/rollout/tiny.yaml eval.num_samples=50 --out runs/k50
    python rollout.py --horizon 1 2 3 --world-models runs/world_model_tiny/final runs/world_model_tiny_flow/final
    python rollout.py --dataset vspw --data-root /data/VSPW --heads path/to/heads --horizon 1 2
    python rollout.py --world-models Amazon-FAR/deltaworld-kinetics \
        --heads Amazon-FAR/seg-head-vspw Amazon-FAR/rgb-head-imagenet \
        --dataset vspw --data-root /data/VSPW --frame-size 512 --horizon 1 3
    python rollout.py --clip my_clip.mp4 --world-models Amazon-FAR/deltaworld-kinetics \
        --heads Amazon-FAR/rgb-head-imagenet --frame-size 512 --horizon 3 --samples 8 --out runs/my_clip

Like every command it takes `--config FILE` and dotted overrides (`eval.context=2`); the
flags are sugar for the keys their help names, and win over both.

Writes `<out>/report.json`, `<out>/report.md` (the table it also prints, each
figure with its 95 % interval over clips, under a header naming the clips, their
frame spacing, the context, K and each world model with the spacing it was
trained on), a picture and an animation per shown clip, and a plot of each
metric against the horizon. See worldmodel/evaluation.py for the methods, the
intervals and the protocol. The first world model's rows are world_best /
world_mean / world_samples; every other model's carry its name
(world_best_<name>, ...).

With `--clip FILE` (any video file or folder of frames) it scores nothing: it
writes `<out>/futures.png` and `futures.gif`, the clip's context, its true future
and K imagined futures, labelled (worldmodel.pictures.futures_picture); one pair
per world model, `futures_<name>.*`, when several are given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from omegaconf import OmegaConf
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tokenizer.data.registry import SOURCES, DataConfig, build_dataset, frame_spacing
from tokenizer.data.sources import read_clip
from tokenizer.model import TokenizerSource
from tokenizer.released import released_model
from tokenizer.runtime.cli import Flag, parse_run_config, resolve_device, run_cli
from tokenizer.runtime.config import merge_config, to_object
from tokenizer.runtime.devices import use_threads
from tokenizer.runtime.errors import CheckpointError, ConfigError, DataError, InputError
from tokenizer.runtime.files import atomic_write_text
from tokenizer.runtime.hub import existing_source, is_repo_id
from tokenizer.runtime.run_folder import check_output_folder, staged_output_folder
from tokenizer.usage import usage_lines
from worldmodel.evaluation import (
    PROTOCOLS,
    WORLD_BEST,
    WORLD_MEAN,
    WORLD_SAMPLES,
    RolloutEvalConfig,
    RolloutEvaluator,
    report_table,
)
from worldmodel.heads import load_heads
from worldmodel.pictures import (
    futures_picture,
    plot_metric_vs_horizon,
    rollout_animation,
    rollout_picture,
    save_animation,
    save_png,
)
from worldmodel.world import load_world_model

# The sources whose validation clips rollout.py scores (data.source).
DATASETS = ("shapes", "vspw", "cityscapes", "kitti", "videos")
PLOTTED = ("miou", "rmse", "feature_loss")


@dataclass
class RolloutRunConfig:
    """What rollout.py reads. Each checkpoint is a local folder or file, or a Hub id (ORG/NAME[@REVISION]): our pushed
    folders, or the released Amazon-FAR models (tokenizer.released), fetched through the Hugging Face cache."""

    # Another name for a key of this config, refused with the key to use (one name per thing across commands).
    REFUSED_KEYS: ClassVar[dict[str, str]] = {"data.batch_size": "batch_size", "backbone": "tokenizer.backbone.name"}

    # The tokenizer whose backbone gives the true features and whose decoding is scored; checkpoint null = the
    # first world model's. A backbone.name other than random-init-dinov3 (a local DINOv3 folder or another hub
    # id) replaces the pretrained backbone of every model loaded, the world models' included.
    tokenizer: TokenizerSource = field(default_factory=lambda: TokenizerSource(checkpoint=None))
    # The world models compared; the first's rows are world_best / world_mean, each other's world_best_<name>, ...
    world_models: list[str] = field(default_factory=lambda: ["runs/world_model_tiny/final"])
    # Task heads, any of segmentation, depth and RGB (worldmodel.heads.load_heads): heads folders (train_heads.py),
    # released ids (Amazon-FAR/seg-head-vspw, depth-head-kitti, rgb-head-imagenet, ...) or KIND:FILE. An RGB head
    # draws the pictures' RGB rows. [] = none: footage is scored by feature loss and energy score, pictured by PCA.
    heads: list[str] = field(default_factory=lambda: ["runs/heads_tiny"])
    out: str = "runs/rollout"  # folder for report.json, report.md, pictures and plots
    # A video file or folder of frames to picture instead of scoring data.*: eval.context frames from clip_start_s,
    # data.video.eval_stride_s apart, then the next max(eval.horizons) as the truth beside K imagined futures, drawn
    # in `out` as futures.png and futures.gif. "" = score the validation clips of data.*.
    clip: str = ""
    clip_start_s: float = 0.0  # seconds into `clip` where its context starts
    overwrite: bool = False  # replace what `out` holds (it then holds only the new report)
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads; null = PyTorch's default
    batch_size: int | None = None  # clips per batch; null = 8 for shapes, 1 for datasets of varying frame size
    # The clips whose futures are imagined and scored: the validation clips of data.*, each eval.context +
    # max(eval.horizons) frames long; data.frame_size is their short side, as the tokenizer was trained.
    data: DataConfig = field(default_factory=DataConfig)
    # protocol "auto": per_horizon for datasets labelling only the last frame (cityscapes, kitti), else one_rollout.
    eval: RolloutEvalConfig = field(default_factory=lambda: RolloutEvalConfig(protocol="auto"))


FLAGS = {
    "--tokenizer": Flag("tokenizer.checkpoint", "tokenizer folder, file or Hub id (default: the first world model's)"),
    "--world-models": Flag("world_models", "world-model folder(s), file(s) or Hub id(s)", nargs="+"),
    "--backbone": Flag("tokenizer.backbone.name", "local DINOv3 folder (or hub id) for released models' backbone"),
    "--heads": Flag("heads", "heads folder(s), released head id(s) or KIND:FILE; '' = none", nargs="+"),
    "--out": Flag("out", "output folder"),
    "--overwrite": Flag("overwrite", "replace what the output folder holds", bool),
    "--device": Flag("device", "auto | cpu | cuda | cuda:N"),
    "--threads": Flag("threads", "torch CPU threads", int),
    "--dataset": Flag("data.source", "evaluation data", choices=DATASETS),
    "--data-root": Flag("data.root", "dataset folder"),
    "--clip": Flag("clip", "video file or frame folder: write its futures.png and .gif instead of a report"),
    "--clip-start": Flag("clip_start_s", "seconds into the clip where its context starts", float),
    "--spacing": Flag("data.video.eval_stride_s", "seconds between the frames of a clip from video", float),
    "--val-split": Flag("data.val_split", "evaluation split of the dataset"),
    "--frame-size": Flag("data.frame_size", "short side of the frames", int),
    "--shapes-strides": Flag("data.shapes_strides", "shapes only: simulator steps between clip frames", int, nargs="+"),
    "--val-clips": Flag("data.val_clips", "evaluation clips (at most)", int),
    "--batch-size": Flag("batch_size", "clips per batch", int),
    "--context": Flag("eval.context", "true frames before the imagined ones", int),
    "--horizon": Flag("eval.horizons", "frames ahead to score, e.g. --horizon 1 2 3", int, nargs="+"),
    "--samples": Flag("eval.num_samples", "K imagined futures per clip (default: the world model's own)", int),
    "--seed": Flag("eval.seed", "sampling seed", int),
    "--pictures": Flag("eval.num_pictures", "clips drawn as pictures", int),
    "--protocol": Flag("eval.protocol", "auto | one_rollout | per_horizon", choices=("auto", *PROTOCOLS)),
}


def parse_args(argv: list[str] | None) -> RolloutRunConfig:
    run = to_object(
        parse_run_config(RolloutRunConfig, __doc__, "configs/rollout/tiny.yaml", argv, FLAGS, default_config=None)
    )
    data = run.data
    if data.source not in DATASETS:
        raise ConfigError(f"data.source {data.source!r} is not one of {', '.join(DATASETS)}")
    if data.val_source:
        raise ConfigError("rollout.py scores the validation clips of data.source; data.val_source is for training runs")
    data.validate()
    batch_size = 1 if run.batch_size is None else run.batch_size  # 0 is a mistake, null the default
    for key, value, least in (("batch_size", batch_size, 1), ("eval.num_pictures", run.eval.num_pictures, 0)):
        if value < least:
            raise ConfigError(f"{key} must be at least {least}, got {value}")
    if run.eval.protocol == "auto":
        run.eval.protocol = "per_horizon" if SOURCES[data.source].dataset.labels_last_frame_only else "one_rollout"
    run.eval.horizons = sorted(set(run.eval.horizons))
    if run.clip_start_s < 0:
        raise ConfigError(f"clip_start_s must be at least 0 seconds, got {run.clip_start_s}")
    if run.clip and not Path(run.clip).exists():
        raise InputError(f"clip {run.clip} does not exist; give a video file or a folder of frames")
    check_output_folder(Path(run.out), run.overwrite, "out", "pictures" if run.clip else "a report")
    return run


def load_dataset(run: RolloutRunConfig, num_frames: int):
    try:
        return build_dataset(run.data, "val", run.eval.seed, num_frames=num_frames)
    except DataError as err:
        # A reader with no clip of this length says so in its own terms; if shorter clips exist, length is the problem.
        try:
            build_dataset(run.data, "val", run.eval.seed, num_frames=2)
        except DataError:
            raise err from None
        raise InputError(
            f"context {run.eval.context} + horizon {max(run.eval.horizons)} = {num_frames} frames "
            f"is longer than any {run.data.source} clip gives"
        ) from None


def horizon_series(report: dict, metric: str) -> dict[str, dict[int, float]]:
    """method -> {horizon: value} of one metric, for the plots."""
    series = {
        method: {
            int(h): values[metric]
            for h, per_method in report["horizons"].items()
            if (values := per_method[method]).get(metric) is not None
        }
        for method in next(iter(report["horizons"].values()))
    }
    return {method: points for method, points in series.items() if points}


# Two spacings closer than this (seconds) are the same: timestamps are float32 and video timestamps jitter.
SPACING_TOLERANCE_S = 1e-3


def trained_spacing(source: str) -> tuple[float, float] | None:
    """(shortest, longest) seconds between the frames a world model was trained on: for a released model the
    paper's Kinetics recipe, for our runs' folders (`<output_dir>/final`) the data.* of the run's config.yaml beside
    them; None where nothing says (a pushed or copied folder without its run). Raises ConfigError or DataError when
    the run's data.* cannot say (a token cache or episode folder that has gone)."""
    if released_model(source) is not None:
        return frame_spacing(DataConfig(source="kinetics"), "train")
    run_config = Path(source).parent / "config.yaml"
    if is_repo_id(source) or not run_config.is_file():
        return None
    data = OmegaConf.load(run_config).get("data")
    if data is None:
        return None
    return frame_spacing(to_object(merge_config(DataConfig, data, origin=f"{run_config} data")), "train")


def _seconds(spacing: list[float] | None) -> str:
    if spacing is None:
        return "an unrecorded spacing"
    low, high = spacing
    if high - low < SPACING_TOLERANCE_S:
        return f"frames {low:.3g} s apart"
    return f"frames {low:.3g}-{high:.3g} s apart"


def spacing_warnings(report: dict) -> list[str]:
    """One line per world model trained on frames spaced otherwise than the clips scored."""
    low, high = report["frame_spacing_s"]
    lines = []
    for name, trained in report["trained_frame_spacing_s"].items():
        if trained is not None and (low < trained[0] - SPACING_TOLERANCE_S or high > trained[1] + SPACING_TOLERANCE_S):
            lines.append(
                f"warning: the clips scored have {_seconds(report['frame_spacing_s'])}, but world model {name} was "
                f"trained on {_seconds(trained)}: its futures are scored at a spacing it never saw"
            )
    return lines


def report_header(report: dict) -> list[str]:
    """The lines above report.md's table: what was scored, by which models, and how to read the intervals."""
    intervals = report["intervals"]
    clips = report["num_clips"]
    lines = [
        f"Clips: {clips} {report['dataset']} validation clips, {_seconds(report['frame_spacing_s'])}; context "
        f"{report['context']} frames, then horizons {', '.join(report['horizons'])}; K = {report['num_samples']} "
        f"imagined futures per clip (seed {report['seed']}, protocol {report['protocol']}).",
    ]
    for name, suffix in report["row_suffixes"].items():
        rows = ", ".join(f"`{kind}{suffix}`" for kind in (WORLD_BEST, WORLD_MEAN, WORLD_SAMPLES))
        trained = report["trained_frame_spacing_s"][name]
        lines.append(f"World model {name} ({report['models'][name]}): rows {rows}; trained on {_seconds(trained)}.")
    level = f"{intervals['level']:.0%}"
    if intervals["given"]:
        lines.append(
            f"[low, high]: {level} {intervals['method']} ({intervals['resamples']:,} resamples of the {clips} clips, "
            f"seed {intervals['seed']})."
        )
    else:
        lines.append(
            f"No intervals: {clips} clips are fewer than the {intervals['min_clips']} a {level} "
            f"{intervals['method']} needs. Figures over so few clips move a lot from one set of clips to another "
            "(a gap closed can change sign); score more clips (--val-clips) before comparing them."
        )
    return lines + spacing_warnings(report)


def write_futures(run: RolloutRunConfig, frames, timestamps, worlds: dict, spacings: dict, heads) -> None:
    """`--clip`: each world model's futures of the clip as `<out>/futures[_<name>].png` and `.gif`, no scores."""
    spacing = run.data.video.eval_stride_s
    for line in spacing_warnings({"frame_spacing_s": [spacing, spacing], "trained_frame_spacing_s": spacings}):
        print(line)
    written = []
    with staged_output_folder(Path(run.out), run.overwrite, "out", "pictures") as stage:
        for name, world in worlds.items():
            stem = "futures" if len(worlds) == 1 else f"futures_{name}"
            futures_picture(
                world,
                frames,
                timestamps,
                max(run.eval.horizons),
                context=run.eval.context,
                num_samples=run.eval.num_samples,
                heads=heads,
                seed=run.eval.seed,
                out=stage / f"{stem}.png",
                animation=stage / f"{stem}.gif",
            )
            written += [f"{stem}.png", f"{stem}.gif"]
    print("wrote " + ", ".join(str(Path(run.out) / name) for name in written))


def main(argv: list[str] | None = None) -> None:
    run = parse_args(argv)
    use_threads(run.threads, "threads")
    device = resolve_device(run.device)
    if run.clip:
        # Read before any model loads, so a clip too short for context + horizon fails in a second.
        frames, timestamps = read_clip(
            run.clip,
            run.eval.context + max(run.eval.horizons),
            run.data.frame_size,
            run.data.video.eval_stride_s,
            run.clip_start_s,
            run.data.video,
        )

    backbone = run.tokenizer.backbone_override
    tokenizer = None
    if run.tokenizer.checkpoint is not None:
        existing_source(run.tokenizer.checkpoint, "tokenizer", "train one with train_tokenizer.py or pass --tokenizer")
        tokenizer = run.tokenizer.load(device)
    worlds, spacings = {}, {}
    for source in run.world_models:
        hint = "train one with train_world_model.py or pass --world-models"
        # A released predictor decodes with the given tokenizer (e.g. a local copy of the released one); our
        # folders carry their own, which the evaluator checks against it.
        given = tokenizer if released_model(source) is not None else None
        world = load_world_model(existing_source(source, "world model", hint), given, backbone=backbone, device=device)
        name = world.config.objective.kind
        if name in worlds:
            name = source.split("@")[0].split("/")[-1] if is_repo_id(source) else Path(source).parent.name or source
        worlds[name] = world
        try:
            spacing = trained_spacing(source)
        except (ConfigError, DataError, CheckpointError) as err:
            # A report is still worth having when a model's training data has moved; it then says "unrecorded".
            print(f"note: the frame spacing world model {name} was trained on is not known: {err}")
            spacing = None
        spacings[name] = list(spacing) if spacing is not None else None
    if tokenizer is None:
        if not worlds:
            raise ConfigError("rollout.py needs a world model (--world-models) or a tokenizer (--tokenizer)")
        tokenizer = next(iter(worlds.values())).tokenizer
    sources = [source for source in run.heads if source]
    heads = load_heads(sources, tokenizer, device=device) if sources else None
    if run.clip:
        write_futures(run, frames, timestamps, worlds, spacings, heads)
        return
    evaluator = RolloutEvaluator(tokenizer, worlds, heads, run.eval, device)
    dataset = load_dataset(run, evaluator.config.clip_frames)
    batch_size = run.batch_size if run.batch_size is not None else 8 if run.data.source == "shapes" else 1
    batches = DataLoader(dataset, batch_size=batch_size)
    for batch in tqdm(
        batches, desc=f"imagining futures of {len(dataset)} clips", unit="batch", dynamic_ncols=True, leave=False
    ):
        evaluator.update(batch)
    extra = {
        "models": dict(zip(worlds, run.world_models)),
        "trained_frame_spacing_s": {name: spacings[name] for name in worlds},
        "tokenizer": run.tokenizer.checkpoint,
        "heads": run.heads,
    }
    if run.data.source == "shapes":
        strides = run.data.shapes_strides
        extra["shapes_stride"] = strides[0] if len(strides) == 1 else strides  # one stride: a number in report.json
    report = evaluator.report(run.data.source, extra)

    out = Path(run.out)
    table = report_table(report)
    usage = report["token_usage"]
    printed_usage = (
        usage_lines(
            usage["own_loss"], usage["shuffled_loss"], usage["copy_loss"], f" on {usage['pairs']} horizon-1 pairs"
        )
        if usage["pairs"]
        else []
    )
    header = report_header(report)
    title = f"# Rollout on {run.data.source}\n\n" + "".join(f"{line}\n\n" for line in header)
    written = ["report.json", "report.md"]
    # Written beside `out` and swapped in whole: a replaced report leaves none of its pictures behind.
    with staged_output_folder(out, run.overwrite, "out", "a report") as stage:
        atomic_write_text(stage / "report.json", json.dumps(report, indent=2) + "\n")
        atomic_write_text(stage / "report.md", title + table + "\n" + "".join(f"\n{line}\n" for line in printed_usage))
        for i, record in enumerate(evaluator.pictures):
            save_png(stage / f"clip{i}.png", rollout_picture(record))
            save_animation(stage / f"clip{i}.gif", rollout_animation(record), fps=2)
            written += [f"clip{i}.png", f"clip{i}.gif"]
        for metric in PLOTTED:
            series = horizon_series(report, metric)
            if series:
                plot_metric_vs_horizon(
                    series,
                    metric,
                    stage / f"{metric}_vs_horizon.png",
                    title=f"{metric} vs horizon ({run.data.source})",
                )
                written.append(f"{metric}_vs_horizon.png")
    print("\n".join(header) + "\n")
    print(table)
    if printed_usage:
        print("\n".join(printed_usage))
    print("wrote " + ", ".join(str(out / name) for name in written))


if __name__ == "__main__":
    run_cli(main)
