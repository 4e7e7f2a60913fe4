"""Train segmentation and depth heads (linear probes), and optionally an RGB head, on a tokenizer's frozen backbone
features.

    python train_heads.py --config configs/heads/tiny.yaml [dotted.key=value ...]

Writes `<output_dir>/segmentation/`, `<output_dir>/depth/` and, with model.rgb, `<output_dir>/rgb/`
(loadable by worldmodel.heads.TaskHeads.load; the RGB head with the tokenizer's
`backbone.feature_norm`), `config.yaml`, and `metrics.json` with the heads' validation
mIoU, depth RMSE and RGB pixel L1 / PSNR on true features.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import torch

from tokenizer.data.cityscapes import CITYSCAPES_NUM_CLASSES
from tokenizer.data.registry import DataConfig, build_dataset
from tokenizer.data.shapes import CLASS_NAMES as SHAPES_CLASS_NAMES
from tokenizer.data.vspw import VSPW_NUM_CLASSES
from tokenizer.model import TokenizerSource
from tokenizer.runtime.cli import parse_run_config, resolve_device, run_cli
from tokenizer.runtime.config import save_config, to_object
from tokenizer.runtime.devices import use_threads
from tokenizer.runtime.errors import ConfigError
from tokenizer.runtime.files import atomic_write_text
from tokenizer.runtime.run_folder import check_output_folder, staged_output_folder
from worldmodel.evaluation import score_heads
from worldmodel.head_training import HeadsConfig, HeadsTrainConfig, new_rgb_head, train_heads, training_batches
from worldmodel.heads import TaskHeads

# Class count (and names, where we have them) of each labelled source; KITTI has depth only.
SOURCE_CLASSES = {"shapes": list(SHAPES_CLASS_NAMES), "vspw": VSPW_NUM_CLASSES, "cityscapes": CITYSCAPES_NUM_CLASSES}


@dataclass
class HeadsRunConfig:
    # The heads and their training are `model` and `train`, as in every training command; `heads` is rollout.py's
    # list of saved heads to load.
    REFUSED_KEYS: ClassVar[dict[str, str]] = {
        "heads": "model",
        **{f"heads.{f.name}": f"model.{f.name}" for f in fields(HeadsConfig)},
        **{f"heads.{f.name}": f"train.{f.name}" for f in fields(HeadsTrainConfig) if f.name != "max_steps"},
        "heads.steps": "train.max_steps",
        "train.steps": "train.max_steps",
    }

    output_dir: str = "runs/heads_tiny"  # folder for the heads' subfolders, config.yaml and metrics.json
    seed: int = 0  # seeds the heads' initialisation and their training clips
    overwrite: bool = False  # replace what output_dir holds (it then holds only the new heads)
    tokenizer: TokenizerSource = field(default_factory=TokenizerSource)  # whose backbone features the heads read
    device: str = "auto"  # auto (cuda when available) | cpu | cuda | cuda:N
    model: HeadsConfig = field(default_factory=HeadsConfig)  # which heads
    train: HeadsTrainConfig = field(default_factory=HeadsTrainConfig)  # how they are trained
    data: DataConfig = field(default_factory=DataConfig)


def main(argv: list[str] | None = None) -> None:
    run = parse_run_config(HeadsRunConfig, __doc__, "configs/heads/tiny.yaml", argv)
    output_dir = Path(run.output_dir)
    device = resolve_device(run.device)
    options: HeadsConfig = to_object(run.model)
    options.validate()
    schedule: HeadsTrainConfig = to_object(run.train)
    schedule.validate()
    check_output_folder(output_dir, run.overwrite, "output_dir")
    use_threads(schedule.threads, "train.threads")
    torch.manual_seed(run.seed)
    tokenizer = to_object(run.tokenizer).load(device)
    data = to_object(run.data)
    known = SOURCE_CLASSES.get(data.source)
    class_names = known if isinstance(known, list) and options.num_classes in (None, len(known)) else None
    num_classes = options.num_classes
    if num_classes is None:
        num_classes = len(known) if isinstance(known, list) else known
    if options.segmentation and num_classes is None:
        raise ConfigError(f"a segmentation head needs model.num_classes for data.source {data.source!r}")
    train_set = build_dataset(data, "train", run.seed)
    rgb_head = new_rgb_head(tokenizer, train_set, options, run.seed) if options.rgb else None
    seg_head, depth_head, log = train_heads(
        tokenizer.features,
        training_batches(train_set, schedule.batch_size, schedule.max_steps, run.seed),
        tokenizer.grid,
        num_classes=num_classes if options.segmentation else None,
        min_depth=options.min_depth if options.depth else None,
        max_depth=options.max_depth if options.depth else None,
        steps=schedule.max_steps,
        lr=schedule.lr,
        device=device,
        class_names=class_names,
        rgb_head=rgb_head,
        rgb_lr=schedule.rgb_lr,
    )
    heads = TaskHeads(seg_head, depth_head, rgb_head)
    metrics = score_heads(tokenizer, heads, build_dataset(data, "val", run.seed), schedule.batch_size, device)
    final_losses = {k: v for k, v in log[-1].items() if k != "step"}
    # Written beside output_dir and swapped in whole: overwritten heads leave nothing of theirs (an old rgb/).
    with staged_output_folder(output_dir, run.overwrite, "output_dir") as stage:
        heads.save(stage)
        save_config(run, stage / "config.yaml")
        atomic_write_text(
            stage / "metrics.json", json.dumps({"steps": len(log), **final_losses, **metrics}, indent=1) + "\n"
        )
    scores = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None)
    print(
        f"heads on true validation features: {scores}; saved {', '.join(str(output_dir / k) for k, _ in heads.items())}"
    )


if __name__ == "__main__":
    run_cli(main)
