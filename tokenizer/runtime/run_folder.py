"""A training run's folder (`output_dir`): what it holds, when a run may write into it, and its logs.

    config.yaml              the run's resolved config, written when training starts
    checkpoints/step_N/      resumable training state (tokenizer.runtime.checkpoints)
    logs/train_loss.jsonl    one record per logged step (`LossLog`); trackers write beside it
    final/                   the trained model, as the task saves it
    metrics.json             the final validation, with the step, skipped data files and process count

A run refuses a folder that holds another run (or anything else) unless told to resume it or to replace it, and
a resumed run refuses a config whose model (or optimizer grouping) differs from the one its checkpoints were made
with. Every command that writes a folder (training runs, heads, rollout reports, recordings) checks it with
`check_output_folder` before it builds anything, and replaces an old one only when it is ready to write: a
training run with `claim_output_folder`, the others by writing beside it (`staged_output_folder`).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from tokenizer.runtime.checkpoints import latest_checkpoint
from tokenizer.runtime.config import flatten
from tokenizer.runtime.errors import CheckpointError, ConfigError, TrainingError
from tokenizer.runtime.files import atomic_write_text, fsync_dir, replace_folder

RUN_CONFIG = "config.yaml"
CHECKPOINTS = "checkpoints"
FINAL = "final"
METRICS = "metrics.json"
RUN_MARKERS = (RUN_CONFIG, CHECKPOINTS, FINAL, "logs", METRICS)
LOSS_LOG = Path("logs") / "train_loss.jsonl"


def check_output_folder(folder: Path, overwrite: bool, key: str, what: str = "files") -> list[str]:
    """Refuse `folder` when it is a file, or a folder holding anything unless `overwrite`; returns what it holds.

    Only looks: a command calls it before it builds or loads anything, and `claim_output_folder` (or
    `staged_output_folder`) when it is ready to write.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{key} {folder} is a file, not a folder; pass a folder path")
    held = sorted(entry.name for entry in folder.iterdir()) if folder.is_dir() else []
    if held and not overwrite:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise ConfigError(
            f"{key} {folder} already holds {what} ({shown}); pass overwrite=true to replace them, or another {key}"
        )
    return held


def claim_output_folder(folder: Path) -> None:
    """Make `folder` the empty folder a command writes into: a folder that holds something (checked with
    overwrite=true) is renamed aside and only then deleted, so the new run never mixes with the old one."""
    if folder.is_dir() and any(folder.iterdir()):
        aside = folder.with_name(f".{folder.name}.replaced")
        shutil.rmtree(aside, ignore_errors=True)
        folder.rename(aside)
        folder.mkdir()
        fsync_dir(folder.parent)
        shutil.rmtree(aside)
    folder.mkdir(parents=True, exist_ok=True)


@contextmanager
def staged_output_folder(folder: Path, overwrite: bool, key: str, what: str = "files") -> Iterator[Path]:
    """A new folder beside `folder` to write everything into; on success it replaces `folder` whole
    (`replace_folder`), on any error it is deleted and `folder` stays as it was."""
    check_output_folder(folder, overwrite, key, what)
    stage = folder.with_name(f".{folder.name}.new")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    replace_folder(stage, folder)


def prepare_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write over another run unless told to resume it or replace it; touches nothing."""
    if resume and overwrite:
        raise ConfigError("resume=true and overwrite=true contradict each other; pass one of them")
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir {output_dir} is a file, not a folder; pass a folder path")
    held = [name for name in RUN_MARKERS if (output_dir / name).exists()]
    if held and not resume and not overwrite:
        raise TrainingError(
            f"output_dir {output_dir} holds another run ({', '.join(held)}); pass resume=true to continue it, "
            "overwrite=true to replace it, or another output_dir"
        )
    if not held and not resume:
        check_output_folder(output_dir, overwrite, "output_dir")


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

    `save` writes into a temporary folder that `replace_folder` swaps in, so final/ is never a half-written model:
    a crash leaves the previous one whole (as final/, or as final.old/ between the two renames, which the next
    swap renames back first) or the new one whole.
    """
    tmp = output_dir / f".{FINAL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save(tmp)
    replace_folder(tmp, output_dir / FINAL)
    atomic_write_text(output_dir / METRICS, json.dumps({**summary, **json_safe(metrics)}, indent=1))
