"""Training-state checkpoints: one folder per step, complete or absent.

`checkpoints/step_000100/` holds `model.safetensors`, `optimizer.safetensors`,
`ema.safetensors` when the run keeps an average of its weights (tokenizer.runtime.ema),
and `state.json` (step, optimizer hyper-parameters, sha256 of each file). The
folder is written under a temporary name and renamed into place, and
`state.json` is written last, so a crash leaves either a complete checkpoint or
one that `latest_checkpoint` recognises as broken and skips for the previous.

There is no RNG state to save: the engine derives every random draw from
(seed, step, rank), so the step number alone restores the random stream.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from tokenizer.runtime.ema import EMA, EMA_FILE
from tokenizer.runtime.errors import CheckpointError
from tokenizer.runtime.files import atomic_write_text, load_module_weights, replace_folder, save_safetensors

log = logging.getLogger(__name__)

PREFIX = "step_"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flatten_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state -> (tensors for safetensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for index, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    groups = [
        {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items()} for group in state_dict["param_groups"]
    ]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in group.items()} for group in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


def checkpoint_path(folder: Path, step: int) -> Path:
    return folder / f"{PREFIX}{step:06d}"


def save_checkpoint(
    folder: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    extra: dict,
    ema: EMA | None = None,
) -> Path:
    """Write checkpoints/step_XXXXXX atomically; returns its path."""
    final = checkpoint_path(folder, step)
    tmp = folder / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_safetensors(model.state_dict(), tmp / MODEL_FILE)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_safetensors(opt_tensors, tmp / OPTIMIZER_FILE)
    files = [MODEL_FILE, OPTIMIZER_FILE]
    if ema is not None:
        ema.save(tmp)
        files.append(EMA_FILE)
    state = {
        "step": step,
        "optimizer": opt_meta,
        "sha256": {name: _sha256(tmp / name) for name in files},
        **extra,
    }
    atomic_write_text(tmp / STATE_FILE, json.dumps(state, indent=1))
    replace_folder(tmp, final)
    return final


def checkpoint_problems(path: Path) -> list[str]:
    """What makes the checkpoint folder `path` unreadable, one entry per damaged file; [] for a complete one."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
        names = list(state["sha256"].items())
    except OSError:
        return [f"{path / STATE_FILE} (missing)"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return [f"{path / STATE_FILE} (not a complete checkpoint record)"]
    problems = []
    for name, digest in names:
        try:
            if _sha256(path / name) != digest:
                problems.append(f"{path / name} (checksum mismatch)")
        except OSError:
            problems.append(f"{path / name} (missing)")
    return problems


def _is_complete(path: Path) -> bool:
    return not checkpoint_problems(path)


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint folders (complete or not), oldest first."""
    if not folder.is_dir():
        return []
    # step_N.old is a folder being replaced (replace_folder), never a checkpoint of its own.
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.removeprefix(PREFIX).isdigit())


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint; broken ones (a crash mid-write, a damaged file) are skipped with a warning."""
    for path in reversed(list_checkpoints(folder)):
        if _is_complete(path):
            return path
        log.warning("skipping incomplete or damaged checkpoint %s", path)
    return None


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (and leftovers of interrupted writes)."""
    for tmp in folder.glob(f".{PREFIX}*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    checkpoints = list_checkpoints(folder)
    for path in checkpoints[: max(0, len(checkpoints) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model and optimizer from a checkpoint folder; returns its state.json."""
    if not _is_complete(path):
        raise CheckpointError(f"checkpoint {path} is incomplete or damaged (checksum mismatch or missing state.json)")
    state = json.loads((path / STATE_FILE).read_text())
    load_module_weights(model, load_file(str(path / MODEL_FILE)), f"checkpoint {path / MODEL_FILE}")
    optimizer_state = _unflatten_optimizer(load_file(str(path / OPTIMIZER_FILE)), state["optimizer"])
    # Muon groups (tokenizer.runtime.muon) keep other state than AdamW's: refuse a swap by name, not by a missing key.
    if any(g.get("muon", False) for g in optimizer_state["param_groups"]) != any(
        g.get("muon", False) for g in optimizer.param_groups
    ):
        raise CheckpointError(
            f"optimizer state in {path} was made by another train.optimizer than this run's; resume with the one it "
            "was trained with, or start a new output_dir"
        )
    try:
        optimizer.load_state_dict(optimizer_state)
    except (ValueError, KeyError) as err:
        raise CheckpointError(
            f"optimizer state in {path} does not fit this model ({err}); other train.lr_scale prefixes also regroup "
            "the parameters"
        ) from None
    return state
