"""Imagine futures with trained world models and score them with task heads against two bounds.

    python rollout.py --horizon 3
    python rollout.py --config configs/rollout/tiny.yaml eval.num_samples=50 --out runs/k50
    python rollout.py --horizon 1 2 3 --world-models runs/world_model_tiny/final runs/world_model_tiny_flow/final
    python rollout.py --dataset vspw --data-root /data/VSPW --heads path/to/heads --horizon 1 2
    python rollout.py --world-models Amazon-FAR/deltaworld-kinetics \
        --heads Amazon-FAR/seg-head-vspw Amazon-FAR/rgb-head-imagenet \
        --dataset vspw --data-root /data/VSPW --frame-size 512 --horizon 1 3

Like every command it takes `--config FILE` and dotted overrides (`eval.context=2`); the
flags are sugar for the keys their help names, and win over both.

Writes `<out>/report.json`, `<out>/report.md` (the table it also prints), a
picture and an animation per shown clip, and a plot of each metric against
the horizon. See worldmodel/evaluation.py for the methods and the protocol.
With several world models the first one fills world_best / world_mean and
every model also gets world_best_<name> / world_mean_<name>.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tokenizer.data.registry import SOURCES, DataConfig, build_dataset
from tokenizer.model import TokenizerSource
from tokenizer.released import released_model
from tokenizer.runtime.cli import Flag, parse_run_config, resolve_device, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.devices import use_threads
from tokenizer.runtime.errors import CheckpointError, ConfigError, DataError, InputError
from tokenizer.runtime.files import atomic_write_text
from tokenizer.runtime.hub import is_repo_id
from tokenizer.runtime.run_folder import check_output_folder, staged_output_folder
from tokenizer.usage import usage_lines
from worldmodel.evaluation import PROTOCOLS, WORLD_BEST, WORLD_MEAN, RolloutEvalConfig, RolloutEvaluator, report_table
from worldmodel.heads import load_heads
from worldmodel.loading import load_world_model
from worldmodel.pictures import plot_metric_vs_horizon, rollout_animation, rollout_picture, save_animation, save_png

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
    # The world models compared; the first fills world_best / world_mean, each gets world_best_<name> too.
    world_models: list[str] = field(default_factory=lambda: ["runs/world_model_tiny/final"])
    # Task heads, any of segmentation, depth and RGB (worldmodel.heads.load_heads): heads folders (train_heads.py),
    # released ids (Amazon-FAR/seg-head-vspw, depth-head-kitti, rgb-head-imagenet, ...) or KIND:FILE. An RGB head
    # draws the pictures' RGB rows. [] = none: footage is scored by feature loss and energy score, pictured by PCA.
    heads: list[str] = field(default_factory=lambda: ["runs/heads_tiny"])
    out: str = "runs/rollout"  # folder for report.json, report.md, pictures and plots
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
    check_output_folder(Path(run.out), run.overwrite, "out", "a report")
    return run


def _existing(source: str, what: str, hint: str) -> str:
    """`source` when it is a Hub id or an existing path; a missing path is an error with `hint`."""
    if not is_repo_id(source) and not Path(source).exists():
        raise CheckpointError(f"{what} {source} does not exist; {hint}")
    return source


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


def horizon_series(report: dict, metric: str, several_models: bool) -> dict[str, dict[int, float]]:
    """method -> {horizon: value} of one metric, for the plots. With several world models the unsuffixed
    world_best / world_mean rows repeat the first model's own rows, so each series is drawn once."""
    repeated = {WORLD_BEST, WORLD_MEAN} if several_models else set()
    series = {
        method: {
            int(h): values[metric]
            for h, per_method in report["horizons"].items()
            if (values := per_method[method]).get(metric) is not None
        }
        for method in next(iter(report["horizons"].values()))
        if method not in repeated
    }
    return {method: points for method, points in series.items() if points}


def main(argv: list[str] | None = None) -> None:
    run = parse_args(argv)
    use_threads(run.threads, "threads")
    device = resolve_device(run.device)

    backbone = run.tokenizer.backbone_override
    tokenizer = None
    if run.tokenizer.checkpoint is not None:
        _existing(run.tokenizer.checkpoint, "tokenizer", "train one with train_tokenizer.py or pass --tokenizer")
        tokenizer = run.tokenizer.load(device)
    worlds = {}
    for source in run.world_models:
        hint = "train one with train_world_model.py or pass --world-models"
        # A released predictor decodes with the given tokenizer (e.g. a local copy of the released one); our
        # folders carry their own, which the evaluator checks against it.
        given = tokenizer if released_model(source) is not None else None
        world = load_world_model(_existing(source, "world model", hint), given, backbone=backbone, device=device)
        name = world.config.objective.kind
        if name in worlds:
            name = source.split("@")[0].split("/")[-1] if is_repo_id(source) else Path(source).parent.name or source
        worlds[name] = world
    if tokenizer is None:
        if not worlds:
            raise ConfigError("rollout.py needs a world model (--world-models) or a tokenizer (--tokenizer)")
        tokenizer = next(iter(worlds.values())).tokenizer
    sources = [source for source in run.heads if source]
    heads = load_heads(sources, tokenizer, device=device) if sources else None
    evaluator = RolloutEvaluator(tokenizer, worlds, heads, run.eval, device)
    dataset = load_dataset(run, evaluator.config.clip_frames)
    batch_size = run.batch_size if run.batch_size is not None else 8 if run.data.source == "shapes" else 1
    batches = DataLoader(dataset, batch_size=batch_size)
    for batch in tqdm(
        batches, desc=f"imagining futures of {len(dataset)} clips", unit="batch", dynamic_ncols=True, leave=False
    ):
        evaluator.update(batch)
    extra = {"models": dict(zip(worlds, run.world_models)), "tokenizer": run.tokenizer.checkpoint, "heads": run.heads}
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
    title = (
        f"# Rollout on {run.data.source}: context {run.eval.context}, K={report['num_samples']}, "
        f"{report['num_clips']} clips\n\n"
    )
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
            series = horizon_series(report, metric, several_models=len(evaluator.worlds) > 1)
            if series:
                plot_metric_vs_horizon(
                    series,
                    metric,
                    stage / f"{metric}_vs_horizon.png",
                    title=f"{metric} vs horizon ({run.data.source})",
                )
                written.append(f"{metric}_vs_horizon.png")
    print(table)
    if printed_usage:
        print("\n".join(printed_usage))
    print("wrote " + ", ".join(str(out / name) for name in written))


if __name__ == "__main__":
    run_cli(main)
