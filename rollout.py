"""Imagine futures with trained world models and score them with task heads against two bounds.

    python rollout.py --horizon 3
    python rollout.py --horizon 1 2 3 --world-model runs/world_model_tiny/final runs/world_model_tiny_flow/final
    python rollout.py --dataset vspw --data-root /data/VSPW --heads path/to/heads --horizon 1 2

Writes `<out>/report.json`, `<out>/report.md` (the table it also prints), a
picture and an animation per shown clip, and a plot of each metric against
the horizon. See worldmodel/evaluation.py for the methods and the protocol.
With several world models the first one fills world_best / world_mean and
every model also gets world_best_<name> / world_mean_<name>.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tokenizer.data.registry import DataConfig, build_dataset
from tokenizer.model import Tokenizer
from tokenizer.runtime.cli import resolve_device, run_cli
from tokenizer.runtime.errors import CheckpointError, DataError, InputError
from tokenizer.runtime.files import atomic_write_text
from tokenizer.usage import usage_lines
from worldmodel.evaluation import RolloutEvalConfig, RolloutEvaluator, report_table
from worldmodel.heads import TaskHeads
from worldmodel.loading import load_world_model
from worldmodel.pictures import plot_metric_vs_horizon, rollout_animation, rollout_picture, save_animation, save_png

DATASETS = ("shapes", "vspw", "cityscapes", "kitti", "videos")
# These label only a clip's last frame, so each horizon needs its own rollout ending there.
LAST_FRAME_LABELLED = ("cityscapes", "kitti")
PLOTTED = ("miou", "rmse", "feature_loss")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="runs/tokenizer_tiny/final", help="saved tokenizer folder (its backbone gives the true features)")
    parser.add_argument("--world-model", nargs="+", default=["runs/world_model_tiny/final"], help="saved world-model folder(s)")
    parser.add_argument("--heads", default="runs/heads_tiny", help="folder with segmentation/ and/or depth/ heads (train_heads.py)")
    parser.add_argument("--dataset", default="shapes", choices=DATASETS)
    parser.add_argument("--data-root", default="", help="dataset folder; default: the source's variable (VSPW_ROOT, ...)")
    parser.add_argument("--split", default="val", help="evaluation split of the dataset")
    parser.add_argument("--frame-size", type=int, default=64, help="short side of the frames, as the tokenizer was trained")
    parser.add_argument("--shapes-stride", type=int, default=1,
                        help="shapes only: simulator steps between clip frames (10 per second; 2 = 0.2 s, the spacing of VSPW and KITTI)")
    parser.add_argument("--context", type=int, default=4, help="true frames before the imagined ones")
    parser.add_argument("--horizon", type=int, nargs="+", default=[1], help="frames ahead to score, e.g. --horizon 1 2 3")
    parser.add_argument("--samples", type=int, default=20, help="K imagined futures per clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (cuda when available) | cpu | cuda | cuda:N")
    parser.add_argument("--out", default="runs/rollout", help="output folder")
    parser.add_argument("--num-clips", type=int, default=64, help="evaluation clips (at most)")
    parser.add_argument("--batch-size", type=int, default=0, help="clips per batch; 0 = 8 for shapes, 1 for datasets of varying frame size")
    parser.add_argument("--pictures", type=int, default=2, help="clips drawn as pictures")
    parser.add_argument("--protocol", default="auto", choices=("auto", "one_rollout", "per_horizon"),
                        help="auto: per_horizon for datasets labelling only the last frame (cityscapes, kitti)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = PyTorch's default")
    return parser.parse_args(argv)


def _existing(path: str, what: str, hint: str) -> Path:
    if not Path(path).exists():
        raise CheckpointError(f"{what} {path} does not exist; {hint}")
    return Path(path)


def load_dataset(args: argparse.Namespace, num_frames: int):
    data = DataConfig(
        source=args.dataset, root=args.data_root, val_split=args.split, frame_size=args.frame_size, val_clips=args.num_clips,
        shapes_strides=[args.shapes_stride],
    )
    try:
        return build_dataset(data, "val", args.seed, num_frames=num_frames)
    except DataError as err:
        # A reader with no clip of this length says so in its own terms; if shorter clips exist, length is the problem.
        try:
            build_dataset(data, "val", args.seed, num_frames=2)
        except DataError:
            raise err from None
        raise InputError(
            f"context {args.context} + horizon {max(args.horizon)} = {num_frames} frames is longer than any {args.dataset} clip gives"
        ) from None


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.num_clips < 1 or args.pictures < 0 or args.batch_size < 0 or args.shapes_stride < 1:
        raise InputError("--num-clips and --shapes-stride must be at least 1, --pictures and --batch-size at least 0")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    config = RolloutEvalConfig(
        context=args.context,
        horizons=sorted(set(args.horizon)),
        num_samples=args.samples,
        seed=args.seed,
        per_horizon_windows=args.protocol == "per_horizon" or (args.protocol == "auto" and args.dataset in LAST_FRAME_LABELLED),
        num_pictures=args.pictures,
    )
    config.validate()
    device = resolve_device(args.device)

    tokenizer = Tokenizer.from_pretrained(_existing(args.tokenizer, "tokenizer", "train one with train_tokenizer.py or pass --tokenizer")).to(device)
    worlds = {}
    for path in args.world_model:
        world = load_world_model(_existing(path, "world model", "train one with train_world_model.py or pass --world-model")).to(device)
        name = world.config.objective.kind
        worlds[name if name not in worlds else Path(path).parent.name or path] = world
    heads = TaskHeads.load(args.heads, in_dim=tokenizer.dim).to(device)
    dataset = load_dataset(args, config.clip_frames)

    evaluator = RolloutEvaluator(tokenizer, worlds, heads, config, device)
    batch_size = args.batch_size or (8 if args.dataset == "shapes" else 1)
    for batch in DataLoader(dataset, batch_size=batch_size):
        evaluator.update(batch)
    extra = {"models": dict(zip(worlds, args.world_model)), "tokenizer": args.tokenizer, "heads": args.heads}
    if args.dataset == "shapes":
        extra["shapes_stride"] = args.shapes_stride
    report = evaluator.report(args.dataset, extra)

    out = Path(args.out)
    table = report_table(report)
    usage = report["token_usage"]
    printed_usage = (
        usage_lines(usage["own_loss"], usage["shuffled_loss"], usage["copy_loss"], f" on {usage['pairs']} horizon-1 pairs") if usage["pairs"] else []
    )
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    title = f"# Rollout on {args.dataset}: context {args.context}, K={args.samples}, {report['num_clips']} clips\n\n"
    atomic_write_text(out / "report.md", title + table + "\n" + "".join(f"\n{line}\n" for line in printed_usage))
    written = [out / "report.json", out / "report.md"]
    for i, record in enumerate(evaluator.pictures):
        save_png(out / f"clip{i}.png", rollout_picture(record))
        save_animation(out / f"clip{i}.gif", rollout_animation(record), fps=2)
        written += [out / f"clip{i}.png", out / f"clip{i}.gif"]
    for metric in PLOTTED:
        series = {
            method: {int(h): values[metric] for h, per_method in report["horizons"].items() if (values := per_method[method]).get(metric) is not None}
            for method in next(iter(report["horizons"].values()))
        }
        series = {method: points for method, points in series.items() if points}
        if series:
            plot_metric_vs_horizon(series, metric, out / f"{metric}_vs_horizon.png", title=f"{metric} vs horizon ({args.dataset})")
            written.append(out / f"{metric}_vs_horizon.png")
    print(table)
    if printed_usage:
        print("\n".join(printed_usage))
    print("wrote " + ", ".join(str(path) for path in written))


if __name__ == "__main__":
    run_cli(main)
