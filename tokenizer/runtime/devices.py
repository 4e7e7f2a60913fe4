"""Where the launched processes compute: joined into one group on the CPU or the GPUs, in which precision, and how
their data-loading workers start.

Both the training engine and the token cache (worldmodel.token_cache) build their Accelerator from these,
so a command launched alike runs alike; evaluation and benchmarks, which run without an Accelerator, take
their autocast from `autocast`.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os

import torch
from accelerate import PartialState

from tokenizer.runtime.errors import ConfigError, TrainingError

MIXED_PRECISIONS = ("no", "bf16", "fp16")


def launched_on_cpu() -> bool:
    """Whether the launched processes must be joined into a CPU (gloo) group; checks that they all joined.

    Without a GPU, Accelerate only joins processes started by `accelerate launch` when told to use the CPU;
    pass the result as `Accelerator(cpu=...)` / `PartialState(cpu=...)`.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = not torch.cuda.is_available() and launched > 1
    joined = PartialState(cpu=cpu).num_processes
    if joined != launched:
        raise TrainingError(
            f"{launched} processes were launched but {joined} joined the process group; check the accelerate launch "
            "flags"
        )
    return cpu


def mixed_precision(choice: str = "auto") -> str:
    """Accelerate's `mixed_precision` for `train.mixed_precision`: "auto" is bf16 where the GPU has it, else "no"
    (fp32)."""
    if choice != "auto":
        if choice not in MIXED_PRECISIONS:
            raise ConfigError(f"train.mixed_precision {choice!r} is not one of auto, {', '.join(MIXED_PRECISIONS)}")
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def use_threads(threads: int | None, key: str) -> None:
    """Set torch's CPU threads to `threads` (the config key `key`); None leaves PyTorch's default (one per core)."""
    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"{key} must be at least 1, or null for PyTorch's default, got {threads}")
    torch.set_num_threads(threads)


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a CUDA device where `mixed_precision()` picks bf16 for training too; plain fp32 elsewhere."""
    if device.type == "cuda" and mixed_precision() == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_fits_in_memory(nbytes: int, what: str) -> None:
    """ConfigError when `nbytes` (a lower bound of what `what` allocates) exceeds the host's physical memory:
    the allocation would fail late, or swap the machine to a halt, instead of one line up front."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if nbytes > total:
        raise ConfigError(
            f"{what} needs at least {nbytes / 2**30:,.1f} GiB, more than the host's {total / 2**30:,.1f} GiB "
            "of memory; lower them"
        )


def worker_start_method(num_workers: int) -> str | None:
    """How a DataLoader starts its `num_workers` worker processes (its `multiprocessing_context`): "forkserver"
    where the platform has it, None (the default) with no workers or none to choose.

    A forked worker inherits the parent's decoder state mid-use: with PyAV 18.1.1, a worker forked after the parent
    had decoded a video waited forever for its first frame. forkserver starts each worker from a clean server
    process, which costs a second or two once per loader (the workers import the project) and needs a picklable
    dataset, as every source's is.
    """
    if num_workers == 0 or "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    return "forkserver"
