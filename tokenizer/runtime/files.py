"""Checkpoint files: atomic writes, folder swaps, safetensors for our own, safe loading of released ones, digests.

Our checkpoints are safetensors (no code runs on load). Released `.bin`/`.pt`
files are read only through `torch.load(..., weights_only=True)`. Every load is
checked against the module it goes into, and a mismatch names every missing,
unexpected and mis-shaped key instead of half-loading.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tokenizer.runtime.errors import CheckpointError

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
OLD_SUFFIX = ".old"  # `replace_folder`: the folder being replaced, until the new one is in place


def _umask() -> int:
    # Linux reports the umask without changing it; setting it to read it back is racy with other threads.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path`.

    A crash mid-write leaves the old file (or nothing) at `path`, never half a file. `write(tmp)` gets
    a name that ends in `path`'s suffix, for writers that pick the format from it (video encoders).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes the file private (0600), and writers such as safetensors replace the file they are
        # given; after writing, the result gets the mode of any file the user writes.
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: str | Path) -> None:
    """Make the renames and creations inside `folder` durable: without it a power cut can undo a rename."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_folder(new: str | Path, target: str | Path) -> None:
    """Put the complete folder `new` at `target`, so that a crash at any point leaves a whole folder to read.

    The old `target` is renamed to `target.old`, `new` renamed in, then `target.old` deleted. A crash between the
    two renames leaves no `target` but a complete `target.old`; the next call (and `recover_folder`) renames it
    back first, and a crash after them leaves a stale `target.old` that the next call deletes.
    """
    new, target = Path(new), Path(target)
    old = target.with_name(target.name + OLD_SUFFIX)
    recover_folder(target)
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
        fsync_dir(target.parent)
    new.rename(target)
    fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(target: str | Path) -> None:
    """Rename `target.old` back to `target` when a crash inside `replace_folder` left only the old one."""
    target = Path(target)
    old = target.with_name(target.name + OLD_SUFFIX)
    if old.is_dir() and not target.exists():
        old.rename(target)
        fsync_dir(target.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    atomic_write(path, write)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_bytes(data)

    atomic_write(path, write)


def save_safetensors(
    state: Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None
) -> None:
    """Save tensors atomically; shared or non-contiguous storage is copied out first."""
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_weights(path: str | Path, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or from a released `.bin`/`.pt` without running pickled code.

    A top-level `state_dict` entry (Lightning-style checkpoints) is unwrapped.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{what} path {path} is a folder; pass the weights file inside it")
    if not path.is_file():
        raise CheckpointError(f"{what} file {path} does not exist")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{what} file {path} is empty (an interrupted download or write?)")
    if path.suffix == SAFETENSORS_SUFFIX:
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"{what} file {path} is corrupt or truncated ({err})") from None
    if path.suffix in PICKLE_SUFFIXES:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError: all mean a bad file
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"{what} file {path} cannot be read safely ({first_line}); it is corrupt, truncated, or holds "
                "pickled objects other than tensors"
            ) from None
        if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, Mapping) or not all(torch.is_tensor(v) for v in loaded.values()):
            raise CheckpointError(f"{what} file {path} does not hold a state dict of tensors")
        return dict(loaded)
    raise CheckpointError(
        f"{what} file {path} has an unknown suffix {path.suffix!r}; expected {SAFETENSORS_SUFFIX} or one of "
        f"{', '.join(PICKLE_SUFFIXES)}"
    )


def check_state_dict(expected: Mapping[str, torch.Tensor], got: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError naming every missing, unexpected and mis-shaped key."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    mismatched = sorted(
        f"{key} (file {tuple(got[key].shape)}, model {tuple(expected[key].shape)})"
        for key in set(expected) & set(got)
        if tuple(got[key].shape) != tuple(expected[key].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing keys {missing}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected}")
    if mismatched:
        problems.append(f"shape mismatches {mismatched}")
    if problems:
        raise CheckpointError(f"{what} does not fit the model (made for another config?): " + "; ".join(problems))
    bad = [key for key, value in got.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        raise CheckpointError(f"{what} holds NaN or inf values in {sorted(bad)}")


def load_module_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Validate `state` against `module.state_dict()` and load it strictly."""
    check_state_dict(module.state_dict(), state, what)
    module.load_state_dict(state, strict=True)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer with its name: the same for two modules (the replicas of different
    processes, two loads of a tokenizer) exactly when they hold the same weights."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
