"""A training run's folder (`output_dir`): what it holds, when a run may write into it, and its logs.

    config.yaml              the run's resolved config, written when training starts
    checkpoints/step_N/      resumable training state (tokenizer.runtime.checkpoints)
    logs/train_loss.jsonl    one record per logged step (`LossLog`); trackers write beside it
    final/                   the trained model, as the task saves it
    metrics.json             the final validation, with the step, skipped data files and process count

A run refuses a folder that holds another run unless told to resume it or to replace it, and a resumed run
refuses a config whose model (or optimizer grouping) differs from the one its checkpoints were made with.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tokenizer.runtime.checkpoints import latest_checkpoint
from tokenizer.runtime.config import flatten
from tokenizer.runtime.errors import CheckpointError, ConfigError, TrainingError
from tokenizer.runtime.files import atomic_write_text

RUN_CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
FINAL = "final"
METRICS = "metrics.json"
RUN_MARKERS = (RUN_CONFIG, CHECKPOINTS, FINAL, "logs", METRICS)
LOSS_LOG = Path("logs") / "train_loss.jsonl"


def prepare_output_dir(output_dir: Path, resume: bool, overwrite: bool, remove: bool = True) -> None:
    """Refuse to write over another run unless told to resume it or replace it (`remove`: delete it for overwrite)."""
    if resume and overwrite:
        raise ConfigError("resume=true and overwrite=true contradict each other; pass one of them")
    held = [name for name in RUN_MARKERS if (output_dir / name).exists()]
    if not held or resume:
        return
    if not overwrite:
        raise TrainingError(
            f"output_dir {output_dir} holds another run ({', '.join(held)}); pass resume=true to continue it, "
            "overwrite=true to replace it, or another output_dir"
        )
    for name in held if remove else ():
        target = output_dir / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def weights_to_start_from(run: DictConfig) -> str:
    """The `init_from` a train script loads into its freshly built module before `train`; "" for none.

    Call it before anything is loaded or written. resume=true continues output_dir's weights and init_from
    replaces them, so the two together are refused, except for a run that was itself started from that
    init_from (resuming with its saved config.yaml, which records it): its newest checkpoint wins, and
    without one it starts again from init_from as it first did.
    """
    if not run.init_from or not run.resume:
        return run.init_from
    output_dir = Path(run.output_dir)
    saved = output_dir / RUN_CONFIG
    started_from = OmegaConf.select(OmegaConf.load(saved), "init_from", default="") if saved.is_file() else ""
    if started_from != run.init_from:
        raise ConfigError(
            f"init_from={run.init_from} and resume=true contradict each other (start from those weights, or continue "
            f"the run in {output_dir}); pass one of them"
        )
    return "" if latest_checkpoint(output_dir / CHECKPOINTS) is not None else run.init_from


def check_same_model(output_dir: Path, run: DictConfig) -> None:
    """Resuming with a different model config, or other lr_scale prefixes, would load mismatched state: name what
    changed."""
    saved_path = output_dir / RUN_CONFIG
    if not saved_path.is_file():
        return
    saved = OmegaConf.load(saved_path)
    changed = []
    for section in ("backbone", "model"):
        if section in run and section in saved:
            old = flatten(OmegaConf.to_container(saved[section]), prefix=section)
            new = flatten(OmegaConf.to_container(run[section]), prefix=section)
            changed += [
                f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                for k in sorted(set(old) | set(new))
                if old.get(k) != new.get(k)
            ]
    if changed:
        raise CheckpointError(
            f"cannot resume {output_dir}: its checkpoints were made with another model config ({'; '.join(changed)}); "
            "restore those values or use another output_dir"
        )
    # The optimizer state is grouped by lr_scale prefix: new values regroup nothing, new prefixes would.
    old_prefixes = sorted(OmegaConf.select(saved, "train.lr_scale", default={}) or {})
    new_prefixes = sorted(OmegaConf.select(run, "train.lr_scale", default={}) or {})
    if old_prefixes != new_prefixes:
        raise CheckpointError(
            f"cannot resume {output_dir}: train.lr_scale names other prefixes ({', '.join(old_prefixes) or 'none'} -> "
            f"{', '.join(new_prefixes) or 'none'}) and its optimizer state is grouped by them; keep those prefixes "
            "(their values may change) or use another output_dir"
        )


class LossLog:
    """`logs/train_loss.jsonl`: one JSON line per logged step, written by the main process only.

    Each record goes out in one write, so a killed job leaves at most one torn
    last line; resuming from step s drops that line and every record after s, so
    the file never holds a step twice.
    """

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records

    def truncate(self, step: int) -> None:
        kept = [record for record in self.read() if record["step"] <= step]
        atomic_write_text(self.path, "".join(json.dumps(record) + "\n" for record in kept))

    def append(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN or inf: an undefined figure (a ratio with nothing to divide) is written as null."""
    return {k: v if math.isfinite(v) else None for k, v in metrics.items()}


def write_final(output_dir: Path, save: Callable[[Path], None], summary: dict, metrics: dict[str, float]) -> None:
    """Replace final/ by the folder `save(folder)` writes, then metrics.json by `summary` followed by `metrics`.

    `save` writes into a temporary folder renamed into place, so final/ is never a half-written model:
    a crash leaves the previous one, none, or the new one whole.
    """
    final = output_dir / FINAL
    tmp = output_dir / f".{FINAL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_text(output_dir / METRICS, json.dumps({**summary, **json_safe(metrics)}, indent=1))
