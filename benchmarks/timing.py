"""Timing, memory and the machine, for every benchmark: how hard `make bench` measures (`Settings`), median wall
times that wait for CUDA, the matmul peak MFU is measured against, the phases of a run (`Phases`: wall time, peak
memory, the CPU share other processes took), and what the numbers were measured on."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import accelerate
import torch

DISTURBED_SHARE = 0.05  # a phase whose timings other processes disturbed: they took more than this share of the cores


@dataclass(frozen=True)
class Settings:
    """How hard to measure. Timings are medians of `repeats` calls after `warmup` untimed ones."""

    warmup: int
    repeats: int
    matmul_sizes: tuple[int, ...]  # square fp32 matmuls on CPU
    matmul_sizes_cuda: tuple[int, ...]  # square bf16 matmuls on CUDA (small ones do not fill a GPU)
    horizon: int  # imagined frames per timed rollout
    train_batch: int | None = None  # clips per training step; None = the config's train.batch_size
    profile_steps: int = 3  # tokenizer training steps under the profiler for the per-operator breakdown
    planner_overrides: tuple[str, ...] = ()  # on top of configs/plan_bench/shapes.yaml
    # Planning speed at a size where a planning step is FLOP-bound (a SCALES key). Each method gets `scale_warmup`
    # untimed one-step searches, then timed calls of one CEM iteration each (a planning step repeats the same
    # search `iterations` times). The token cost is timed `scale_repeats` times; the feature cost and DINOWorld,
    # which imagine every patch at every step and take a minute or more per iteration at vits_224 on a 2-core
    # CPU, `scale_repeats_dense` times.
    planning_scale: str = "vits_224"
    scale_warmup: int = 1
    scale_repeats: int = 5
    scale_repeats_dense: int = 1


FULL = Settings(warmup=3, repeats=15, matmul_sizes=(1024, 1536, 2048), matmul_sizes_cuda=(4096, 8192), horizon=4)
QUICK = Settings(
    warmup=1,
    repeats=2,
    matmul_sizes=(256,),
    matmul_sizes_cuda=(1024,),
    horizon=2,
    train_batch=2,
    profile_steps=1,
    planning_scale="tiny",  # the path alone: at vits_224 even a 4-candidate search takes tens of seconds on 2 cores
    scale_repeats=1,
    planner_overrides=("planner.candidates=4", "planner.elites=2", "planner.iterations=1", "planner.horizon=2"),
)


# --- measuring ---------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timings(fn: Callable[[], object], settings: Settings, device: torch.device) -> list[float]:
    """Wall times of `settings.repeats` calls of `fn` after `settings.warmup` untimed ones
    (first calls pay for allocation, thread pools and kernel selection). CUDA work is waited for."""
    for _ in range(settings.warmup):
        fn()
    times = []
    for _ in range(settings.repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], object], settings: Settings, device: torch.device) -> float:
    """The median of `timings`: robust to the odd call that another process slowed down."""
    return statistics.median(timings(fn, settings, device))


def matmul_peak(settings: Settings, device: torch.device) -> dict:
    """The matmul peak of the device it runs on, in the dtype training computes in (fp32 on CPU, bf16 on CUDA): the best
    GFLOP/s of square torch.mm over a few sizes, the ceiling MFU is measured against."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    sizes = settings.matmul_sizes_cuda if device.type == "cuda" else settings.matmul_sizes
    by_size = {}
    for n in sizes:
        generator = torch.Generator().manual_seed(n)
        a, b = (torch.randn(n, n, generator=generator).to(device, dtype) for _ in range(2))
        seconds = min(timings(lambda a=a, b=b: torch.mm(a, b), settings, device))
        by_size[str(n)] = 2 * n**3 / seconds / 1e9
    return {"gflops": max(by_size.values()), "dtype": str(dtype).removeprefix("torch."), "gflops_by_size": by_size}


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: the most memory tensors held since the last reset. CPU: the process's peak resident set
    so far (getrusage cannot be reset, so it includes every phase before)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used since boot (/proc/stat; 0 where there is none)."""
    stat = Path("/proc/stat")
    if not stat.is_file():
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in stat.read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the platform tells it, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class Phases:
    """Wall time, peak memory and CPU contention of each named phase of a run.

    A phase runs for the body of `with phases(name):`, or from `start(name)` to the next `start` or `stop`
    (a run whose steps may be skipped names only those it takes). `other_processes_cpu_share` is the share of
    the machine's cores that other processes (or the hypervisor) took during the phase; above DISTURBED_SHARE,
    CPU timings of that phase are disturbed.
    """

    def __init__(self, device: torch.device | None = None, announce: str = ""):
        self.device = torch.device("cpu") if device is None else device
        self.announce = announce  # printed with each phase's name as it starts, e.g. "[bench]"; "" prints nothing
        self.cores = usable_cores()
        self.records: dict[str, dict[str, float]] = {}
        self._name = ""
        self._busy = self._own = self._started = 0.0

    @property
    def seconds(self) -> dict[str, float]:
        """Wall seconds of each phase taken so far."""
        return {name: record["seconds"] for name, record in self.records.items()}

    def start(self, name: str) -> None:
        self.stop()
        if self.announce:
            print(f"{self.announce} {name} ...", flush=True)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._name = name
        self._busy, self._own, self._started = machine_busy_seconds(), time.process_time(), time.perf_counter()

    def stop(self) -> None:
        if not self._name:
            return
        seconds = time.perf_counter() - self._started
        others = (machine_busy_seconds() - self._busy) - (time.process_time() - self._own)
        self.records[self._name] = {
            "seconds": seconds,
            "peak_memory_mb": peak_memory_bytes(self.device) / 2**20,
            "other_processes_cpu_share": max(0.0, others / (seconds * self.cores)),
        }
        self._name = ""

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.start(name)
        yield
        self.stop()


# --- the machine -------------------------------------------------------------------------------------------


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages ([] where the platform has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else []


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "accelerate": accelerate.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "load_average_at_start": load_average(),
    }


def machine_summary(load_at_start: list[float]) -> str:
    """The machine in one line, as the goal-reaching reports give it: cores, torch, architecture, and the load
    average when the run started (`load_at_start`, from `load_average`) and as it ends."""
    return (
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {platform.machine()}; "
        f"load average at start {', '.join(f'{x:.1f}' for x in load_at_start)}, "
        f"at end {', '.join(f'{x:.1f}' for x in load_average())}"
    )
