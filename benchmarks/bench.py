"""Speed, FLOPs and memory of DeltaTok, DeltaWorld and the patch-level DINOWorld, side by side in one run.

    python -m benchmarks.bench --out runs/bench [--quick]        (or: make bench)

Everything is measured in one process on one machine, so the numbers can be set against each other:
- the machine, and its matmul peak measured here (fp32 on CPU, bf16 on CUDA: the training dtype);
- parameters and FLOPs per imagined frame of DeltaWorld (the predictor alone, and with the DeltaTok
  decode to every patch feature) and of DINOWorld (every patch predicted), at the tiny default, at
  ViT-S/16 on 224 px frames (196 patches) and at the paper's ViT-B/16 on 512 px frames (1,024 patches),
  counted on the meta device: no weights, no download;
- latency per imagined frame and per CEM planning step of both world models at tiny;
- seconds per CEM planning step at a ViT-S/16-like size on 224 px frames (196 patches, every model
  384 wide), where a planning step is FLOP-bound: DeltaWorld with the token cost and with the feature
  cost, and DINOWorld, with their FLOPs and the time ratios, and seconds per env step: taking in the
  newest frame (its tokens alone taken, the context's kept) and the search (`--quick`: at tiny);
- training throughput of the tokenizer and of the world model, the step time of best-of-many with
  256 hypotheses over 1, and the model FLOPs utilisation (MFU) of the tokenizer's training step;
- wall time, peak memory and the CPU share other processes took (which disturbs timings) of each phase.
Writes <out>/report.json and <out>/report.md and prints the tables. Every model has seeded random
weights: speed does not depend on what a model has learned. `--quick` only checks that every number
can be made (few repeats, small batches); its timings mean little.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import accelerate
import numpy as np
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from benchmarks.plan_config import PlanBenchConfig
from envs.goals import FeatureGoalCost, StepCost, TokenGoalCost, goal_cost
from envs.planners import ContextWindow, Planner, PlannerConfig, sequence_costs
from envs.shapes import ShapesEnv
from tokenizer.data.shapes import ShapesConfig
from tokenizer.model import Tokenizer, TokenizerConfig
from tokenizer.run_config import TokenizerRunConfig
from tokenizer.runtime.cli import Flag, parse_run_config, run_cli
from tokenizer.runtime.config import flatten, load_config, to_object
from tokenizer.runtime.devices import autocast, use_threads
from tokenizer.runtime.files import atomic_write_text
from tokenizer.runtime.optim import build_optimizer
from tokenizer.runtime.run_config import TrainConfig
from tokenizer.training import TokenizerTask
from worldmodel.run_config import WorldModelRunConfig
from worldmodel.training import WorldModelTask
from worldmodel.world import WorldModel, build_world_model

REPO = Path(__file__).resolve().parents[1]
DT = 1.0 / ShapesConfig.fps  # seconds between frames, as in the Shapes world
PLAN_BENCH_CONFIG = "configs/plan_bench/shapes.yaml"


@dataclass(frozen=True)
class ModelSource:
    """A run config file and dotted overrides, as a training script gets them."""

    path: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scale:
    """One model size: the tokenizer, DeltaWorld and DINOWorld configs that go together."""

    tokenizer: ModelSource
    deltaworld: ModelSource
    dinoworld: ModelSource


# DINOv3 ViT-B/16's shape with seeded random weights: counting FLOPs and parameters needs no pretrained weights.
VITB_BACKBONE = (
    "backbone.name=random-init-dinov3",
    "backbone.hidden_size=768",
    "backbone.num_layers=12",
    "backbone.num_heads=12",
    "backbone.intermediate_size=3072",
    "backbone.patch_size=16",
)
VITB_WORLD = "configs/world_model/vitb_dinov3_kinetics.yaml"
# DINOv3 ViT-S/16's shape, random weights as above, and the paper's recipe scaled to its width: a 12-block
# DeltaTok decoder (SwiGLU 2 * 1536 // 3) and 12-block predictors 384 wide (6 heads of 64), on 224 px frames.
VITS_BACKBONE = (
    "backbone.name=random-init-dinov3",
    "backbone.hidden_size=384",
    "backbone.num_layers=12",
    "backbone.num_heads=6",
    "backbone.intermediate_size=1536",
    "backbone.patch_size=16",
    "model.mlp_hidden_size=1024",
)
VITS_WORLD = ("model.predictor.hidden_size=384", "model.predictor.num_heads=6", "data.frame_size=224")
# DINOWorld beside DeltaWorld at one size: the same predictor, RoPE over (time, x, y) on 20 channels each plus
# 4 unrotated (head size 64), trained deterministically, as tiny_dinoworld.yaml makes it at tiny.
DINOWORLD = ("model.kind=dinoworld", "model.predictor.rope_axis_sizes=[20,20,20]", "model.objective.kind=deterministic")
TINY_TOKENIZER = ModelSource("configs/tokenizer/tiny.yaml")
TINY_WORLD = ModelSource("configs/world_model/tiny.yaml")
SCALES = {
    "tiny": Scale(TINY_TOKENIZER, TINY_WORLD, ModelSource("configs/world_model/tiny_dinoworld.yaml")),
    "vitb_512": Scale(
        ModelSource("configs/tokenizer/vitb_dinov3_kinetics.yaml", VITB_BACKBONE),
        ModelSource(VITB_WORLD),
        ModelSource(VITB_WORLD, DINOWORLD),
    ),
    "vits_224": Scale(
        ModelSource("configs/tokenizer/vitb_dinov3_kinetics.yaml", VITS_BACKBONE),
        ModelSource(VITB_WORLD, VITS_WORLD),
        ModelSource(VITB_WORLD, (*VITS_WORLD, *DINOWORLD)),
    ),
}
DISTURBED_SHARE = 0.05  # a phase whose timings other processes disturbed: they took more than this share of the cores
TOP_OPS = 12  # operators listed in the tokenizer step's profile
BOM_HYPOTHESES = (256, 1)  # best-of-many training cost: the paper's 256 noise queries per target against one


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


def _sdpa_forward_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode knows SDPA's CUDA kernels but counts the fused CPU kernel as 0 FLOPs; giving it the
# same formulas makes attention count alike on CPU, CUDA and the meta device (where SDPA runs as matmuls).
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_flops,
}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything `fn` runs, as FlopCounterMode counts them: 2 per multiply-add of matmuls,
    convolutions and attention; elementwise work is free."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        fn()
    return counter.get_total_flops()


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


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


class Phases:
    """Wall time, peak memory and CPU contention of each named phase of the benchmark.

    `other_processes_cpu_share` is the share of the machine's cores that other processes (or the
    hypervisor) took during the phase; above a few percent, CPU timings of that phase are disturbed.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.records: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        print(f"[bench] {name} ...", flush=True)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        busy, own, start = machine_busy_seconds(), time.process_time(), time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        others = (machine_busy_seconds() - busy) - (time.process_time() - own)
        self.records[name] = {
            "seconds": seconds,
            "peak_memory_mb": peak_memory_bytes(self.device) / 2**20,
            "other_processes_cpu_share": max(0.0, others / (seconds * self.cores)),
        }


# --- building models from the project's configs ---------------------------------------------------------


def build_tokenizer(source: ModelSource) -> Tokenizer:
    run = load_config(TokenizerRunConfig, REPO / source.path, source.overrides)
    return Tokenizer.build(TokenizerConfig(backbone=to_object(run.backbone), model=to_object(run.model)))


def load_world_run(source: ModelSource) -> WorldModelRunConfig:
    return to_object(load_config(WorldModelRunConfig, REPO / source.path, source.overrides))


def inference_world(tokenizer: Tokenizer, run: WorldModelRunConfig) -> WorldModel:
    """A world model for imagining only. Its parameters do not require grad: nothing is trained, and
    FlopCounterMode's module tracker fails on trainable parameters used under no_grad."""
    return build_world_model(tokenizer, run.model).eval().requires_grad_(False)


def random_clip(
    batch: int, num_frames: int, size: int, device: torch.device | str, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Seeded uint8 frames (B, T, 3, S, S) at timestamps (B, T) DT apart: compute does not depend on content."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, num_frames, 3, size, size), dtype=torch.uint8, generator=generator)
    timestamps = (torch.arange(num_frames, dtype=torch.float32) * DT).expand(batch, -1).contiguous()
    return {"frames": frames.to(device), "timestamps": timestamps.to(device)}


# --- the measurements -------------------------------------------------------------------------------------


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
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "accelerate": accelerate.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else [],
    }


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


@torch.no_grad()
def imagined_frame_cost(scale: Scale, device: torch.device | str) -> dict:
    """Parameters, and FLOPs to imagine one frame of one sample after `eval.context` real frames.

    DeltaWorld's `step` runs the predictor (sample one token, project it into the history) and the DeltaTok
    decode of that token to all N patch features; the decode is counted alone and subtracted to get the
    predictor's share. DINOWorld's `step` predicts all N patch features against a history of every patch.
    """
    with torch.device(device):
        torch.manual_seed(0)
        tokenizer = build_tokenizer(scale.tokenizer).eval()
        delta_run, dino_run = load_world_run(scale.deltaworld), load_world_run(scale.dinoworld)
        delta, dino = inference_world(tokenizer, delta_run), inference_world(tokenizer, dino_run)
    context, size = delta_run.eval.context, delta_run.data.frame_size
    clip = random_clip(1, context, size, device)
    dream = delta.start(clip["frames"], clip["timestamps"], 1)
    next_time = dream.time + DT
    step = count_flops(lambda: delta.step(dream, next_time))
    token = torch.zeros(1, tokenizer.dim, device=device)
    decode = count_flops(lambda: tokenizer.decode(token, dream.features, dream.grid))
    dino_dream = dino.start(clip["frames"], clip["timestamps"], 1)
    patches = count_flops(lambda: dino.step(dino_dream, next_time))
    return {
        "frame_size": size,
        "patches": dream.features.shape[1],
        "context": context,
        "params": {
            "backbone": num_params(tokenizer.backbone),
            "deltatok": num_params(tokenizer.deltatok),
            "deltaworld": num_params(delta.objective),
            "dinoworld": num_params(dino.objective),
        },
        "flops": {"deltaworld_predictor": step - decode, "deltaworld_decode": step, "dinoworld": patches},
    }


PLANNING_ACTION_DIM = 2  # Shapes-v0's action box, whose bounds the planners search in


def planning_worlds(scale: Scale, device: torch.device | str) -> tuple[Tokenizer, WorldModel, WorldModel, int]:
    """The tokenizer, DeltaWorld (with its readout, for the token cost) and DINOWorld at `scale`, both conditioned
    on 2-D actions as planning needs, built on `device` with seeded random weights; and the frame size."""
    conditioned = (f"model.actions.dim={PLANNING_ACTION_DIM}",)
    with torch.device(device):
        torch.manual_seed(0)
        tokenizer = build_tokenizer(scale.tokenizer).eval()
        delta_run = load_world_run(
            ModelSource(
                scale.deltaworld.path, (*scale.deltaworld.overrides, *conditioned, "model.readout.enabled=true")
            )
        )
        dino_run = load_world_run(ModelSource(scale.dinoworld.path, (*scale.dinoworld.overrides, *conditioned)))
        delta, dino = inference_world(tokenizer, delta_run), inference_world(tokenizer, dino_run)
    return tokenizer, delta, dino, delta_run.data.frame_size


@torch.no_grad()
def planning_step_flops(planner: PlannerConfig, scale: Scale) -> dict:
    """FLOPs of one planning step at `scale`, counted on the meta device: the search (iterations x horizon
    imagined steps of every candidate, each scored by its cost) for DeltaWorld with the token cost, with the
    feature cost, and for DINOWorld; and, apart, what each spends to take in the newest real frame, which
    planning does not change: `observe` as an agent takes it (`observing`: the backbone on it, its tokens, the
    window's new first frame's against black, imagination started from the kept tokens) and
    `observe_restarting` as `WorldModel.start` from every context frame's features would (`restarting`)."""
    device = "meta"
    tokenizer, delta, dino, size = planning_worlds(scale, device)
    clip = random_clip(1, planner.context, size, device)
    newest = clip["frames"][:, -1:]
    goal = tokenizer.features(random_clip(1, 1, size, device, seed=1)["frames"])[0, 0]
    actions = torch.zeros(planner.candidates, planner.horizon, PLANNING_ACTION_DIM, device=device)

    def search(world: WorldModel, cost: StepCost) -> int:
        rows = world.start(clip["frames"], clip["timestamps"], 1).repeat(planner.candidates)
        return planner.iterations * count_flops(lambda: sequence_costs(world, rows, actions, DT, cost, None))

    worlds, meta = (("deltaworld", delta), ("dinoworld", dino)), torch.device(device)
    search_flops = {
        "deltaworld_token": search(delta, TokenGoalCost(delta.readout.summarize(goal, tokenizer.grid(newest)))),
        "deltaworld_feature": search(delta, FeatureGoalCost(goal)),
        "dinoworld": search(dino, FeatureGoalCost(goal)),
    }
    return {
        "search": search_flops,
        "observe": {name: count_flops(observing(world, planner.context, size, meta)) for name, world in worlds},
        "observe_restarting": {
            name: count_flops(restarting(world, planner.context, size, meta)) for name, world in worlds
        },
        "dinoworld_over_deltaworld_token_search": search_flops["dinoworld"] / search_flops["deltaworld_token"],
        "deltaworld_feature_over_token_search": search_flops["deltaworld_feature"] / search_flops["deltaworld_token"],
        "settings": {
            "frame_size": size,
            "candidates": planner.candidates,
            "horizon": planner.horizon,
            "iterations": planner.iterations,
            "context": planner.context,
            "counted_on": device,
        },
    }


def flop_ratios(flops: dict[str, int]) -> dict[str, float]:
    return {
        "predictor_over_decode": flops["deltaworld_predictor"] / flops["deltaworld_decode"],
        "dinoworld_over_deltaworld_predictor": flops["dinoworld"] / flops["deltaworld_predictor"],
        "dinoworld_over_deltaworld_decode": flops["dinoworld"] / flops["deltaworld_decode"],
    }


@torch.no_grad()
def imagination_ms(world: WorldModel, run: WorldModelRunConfig, settings: Settings, device: torch.device) -> float:
    """Milliseconds per imagined frame as rollout.py imagines: one clip, K = model.num_samples futures, each
    `step` advancing all K by a frame and growing their histories by it (cached keys/values reused)."""
    clip = random_clip(1, run.eval.context, run.data.frame_size, device)
    generator = torch.Generator(device).manual_seed(0)
    with autocast(device):
        dream = world.start(clip["frames"], clip["timestamps"], run.model.num_samples)

    def rollout() -> None:
        state, at = dream, dream.time
        with autocast(device):
            for _ in range(settings.horizon):
                at = at + DT
                _, _, state = world.step(state, at, generator=generator)

    return 1000 * median_seconds(rollout, settings, device) / settings.horizon


def goal_image(size: int) -> np.ndarray:
    return random_clip(1, 1, size, "cpu", seed=1)["frames"][0, 0].permute(1, 2, 0).numpy()


@torch.no_grad()
def planning_search(
    world: WorldModel, planner: Planner, context: int, size: int, cost: StepCost, device: torch.device
) -> Callable[[], None]:
    """One `Planner.plan` call (CEM: iterations x horizon batched steps over every candidate) from `context`
    real frames of `size` px toward a goal, on `device` where the world model is (bf16 autocast on CUDA)."""
    clip = random_clip(1, context, size, device)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad(), autocast(device):
        dream = world.start(clip["frames"], clip["timestamps"], 1)

    @torch.no_grad()
    def search() -> None:
        with autocast(device):
            planner.plan(world, dream, DT, cost, generator)

    return search


def planning_ms(
    world: WorldModel, planner: Planner, context: int, size: int, cost: StepCost, settings: Settings
) -> float:
    """Milliseconds per planning step (`planning_search`) on the CPU, where `make plan-bench` plans at tiny."""
    cpu = torch.device("cpu")
    return 1000 * median_seconds(planning_search(world, planner, context, size, cost, cpu), settings, cpu)


def plan_bench_config(settings: Settings) -> PlanBenchConfig:
    """configs/plan_bench/shapes.yaml with the settings' planner overrides: the planner `make plan-bench` uses."""
    return to_object(load_config(PlanBenchConfig, REPO / PLAN_BENCH_CONFIG, settings.planner_overrides))


def planning(settings: Settings) -> dict:
    """CEM planning latency in DeltaWorld and DINOWorld, set up as `make plan-bench` sets them up:
    configs/plan_bench/shapes.yaml's planner and action-conditioned world models, Shapes-v0's action box."""
    cfg = plan_bench_config(settings)
    action_space = ShapesEnv().action_space
    planner = Planner(cfg.planner, action_space.low, action_space.high)
    torch.manual_seed(0)
    tokenizer = build_tokenizer(TINY_TOKENIZER).eval()
    results = {}
    for name in ("deltaworld", "dinoworld"):
        section = getattr(cfg, name)
        run = load_world_run(ModelSource(section.config, tuple(section.overrides)))
        world, size = inference_world(tokenizer, run), run.data.frame_size
        # DeltaWorld with its readout plans on tokens; the feature cost decodes every imagined step.
        kinds = ("token", "features") if world.readout is not None else ("features",)
        for kind in kinds:
            key = f"{name}_tiny" if kind == kinds[0] else f"{name}_{kind}_tiny"
            results[key] = planning_ms(
                world, planner, cfg.planner.context, size, goal_cost(world, goal_image(size), kind), settings
            )
    return {"ms_per_planning_step": results, "planner": vars(cfg.planner), "device": "cpu"}


SEARCHES = ("deltaworld_token", "deltaworld_feature", "dinoworld")  # as planning_step_flops names them


def observing(world: WorldModel, context: int, size: int, device: torch.device) -> Callable[[], None]:
    """What an MPC agent spends on each new real frame before it plans (`MPCAgent.act`), its context full and
    sliding: the backbone on the newest frame, the DeltaTok encoder on it and on the window's new first frame
    against the black frame (one batch of two), and imagination started from the tokens it kept
    (`ContextWindow`)."""
    clip = random_clip(1, context + 1, size, device)
    window = ContextWindow(world, context, DT)
    with torch.no_grad(), autocast(device):
        for index in range(context):
            window.append(clip["frames"][:, index : index + 1])
        window.dream()
    newest = clip["frames"][:, -1:]

    @torch.no_grad()
    def observe() -> None:
        with autocast(device):
            window.append(newest)
            window.dream()

    return observe


def restarting(world: WorldModel, context: int, size: int, device: torch.device) -> Callable[[], None]:
    """Taking in the newest frame without kept tokens, beside `observing`: the backbone on it, then
    `WorldModel.start` from every context frame's features (the earlier frames' kept), which takes every
    frame's tokens again."""
    clip = random_clip(1, context, size, device)
    with torch.no_grad(), autocast(device):
        kept = world.tokenizer.features(clip["frames"][:, :-1])

    @torch.no_grad()
    def observe() -> None:
        with autocast(device):
            newest = world.tokenizer.features(clip["frames"][:, -1:])
            world.start(clip["frames"], clip["timestamps"], 1, torch.cat((kept, newest), dim=1))

    return observe


def fields_of(config: object, *names: str) -> dict:
    return {name: getattr(config, name) for name in names}


def ratios(values: dict[str, float]) -> dict[str, float]:
    """How many times DINOWorld's value, and the feature cost's, is the token cost's (and DINOWorld's the feature
    cost's)."""
    return {
        "dinoworld_over_deltaworld_token": values["dinoworld"] / values["deltaworld_token"],
        "dinoworld_over_deltaworld_feature": values["dinoworld"] / values["deltaworld_feature"],
        "deltaworld_feature_over_token": values["deltaworld_feature"] / values["deltaworld_token"],
    }


def scale_planning(scale_name: str, planner_config: PlannerConfig, settings: Settings, device: torch.device) -> dict:
    """Seconds per CEM planning step at SCALES[scale_name] on `device`, in one run: DeltaWorld with the token cost
    (the readout, nothing decoded), with the feature cost (every imagined step decoded to all N patches), and
    DINOWorld (every patch predicted), each through `Planner.plan` from `planner_config.context` random frames
    toward a random goal frame; set beside their FLOPs (`planning_step_flops`) and what taking in a new real
    frame costs each, with the context's tokens kept (`observing`) and, for comparison, without (`restarting`).
    Seeded random weights: no backbone or checkpoint is downloaded.

    A CEM iteration imagines the same candidates x horizon steps from the same start whatever actions it
    samples, so one iteration per call is timed and a planning step is `iterations` of them: at ViT-S/224 the
    feature cost and DINOWorld take a minute or more per iteration on a 2-core CPU. The token cost's whole step
    is timed too, as a check of that product.
    """
    action_space = ShapesEnv().action_space
    iteration, warm, whole = (
        Planner(replace(planner_config, **changes), action_space.low, action_space.high)
        for changes in ({"iterations": 1}, {"iterations": 1, "horizon": 1}, {})
    )
    tokenizer, delta, dino, size = planning_worlds(SCALES[scale_name], device)
    context = planner_config.context
    searches = {
        "deltaworld_token": (delta, "token"),
        "deltaworld_feature": (delta, "features"),
        "dinoworld": (dino, "features"),
    }
    repeats = {
        name: settings.scale_repeats if name == "deltaworld_token" else settings.scale_repeats_dense
        for name in SEARCHES
    }
    per_iteration: dict[str, list[float]] = {}
    costs: dict[str, StepCost] = {}
    for name, (world, kind) in searches.items():
        with torch.no_grad(), autocast(device):
            costs[name] = goal_cost(world, goal_image(size), kind)
        for _ in range(settings.scale_warmup):  # every operator at this width, for a fraction of a call's time
            planning_search(world, warm, context, size, costs[name], device)()
        search = planning_search(world, iteration, context, size, costs[name], device)
        per_iteration[name] = timings(search, replace(settings, warmup=0, repeats=repeats[name]), device)
        print(f"[bench] {name}: {statistics.median(per_iteration[name]):.3f} s per CEM iteration", flush=True)
    seconds = {name: planner_config.iterations * statistics.median(times) for name, times in per_iteration.items()}
    whole_search = planning_search(delta, whole, context, size, costs["deltaworld_token"], device)
    whole_token = median_seconds(whole_search, replace(settings, warmup=0, repeats=repeats["deltaworld_token"]), device)
    observe_settings = replace(settings, warmup=settings.scale_warmup, repeats=settings.scale_repeats)
    observe, observe_restarting = (
        {
            name: median_seconds(taking_in(world, context, size, device), observe_settings, device)
            for name, world in (("deltaworld", delta), ("dinoworld", dino))
        }
        for taking_in in (observing, restarting)
    )
    env_step = {name: seconds[name] + observe[name.split("_")[0]] for name in SEARCHES}
    flops = planning_step_flops(planner_config, SCALES[scale_name])
    grid = tokenizer.backbone.grid(size, size)
    return {
        "seconds_per_planning_step": seconds,
        "time_ratios": ratios(seconds),
        "flops_per_planning_step": flops["search"],
        "flop_ratios": ratios(flops["search"]),
        "achieved_gflops": {name: flops["search"][name] / seconds[name] / 1e9 for name in SEARCHES},
        "seconds_per_iteration": per_iteration,
        "deltaworld_token_whole_step": {
            "seconds": whole_token,
            "over_iterations_times_one": whole_token / seconds["deltaworld_token"],
        },
        # An env step is taking in the new frame (`observing`: its tokens alone, the context's kept), then the
        # search; the first does not depend on the cost. `_restarting`: taking it in by `WorldModel.start` from
        # every context frame (`restarting`), what the kept tokens save.
        "seconds_to_observe": observe,
        "flops_to_observe": flops["observe"],
        "seconds_to_observe_restarting": observe_restarting,
        "flops_to_observe_restarting": flops["observe_restarting"],
        "seconds_per_env_step": env_step,
        "env_step_time_ratios": ratios(env_step),
        "settings": {
            "scale": scale_name,
            "frame_size": size,
            "patches": grid[0] * grid[1],
            "width": tokenizer.dim,
            "backbone": fields_of(
                tokenizer.config.backbone, "num_layers", "num_heads", "intermediate_size", "patch_size"
            ),
            "deltatok": fields_of(tokenizer.config.model, "num_layers", "mlp_hidden_size"),
            "predictor": fields_of(delta.config.predictor, "hidden_size", "num_layers", "num_heads"),
            "readout": {"grid": delta.config.readout.grid}
            | fields_of(delta.config.readout.predictor, "hidden_size", "num_layers", "num_heads"),
            "planner": vars(planner_config),
            "timed": "one CEM iteration per call, median; seconds per planning step = iterations x that median",
            "warmup_one_step_searches": settings.scale_warmup,
            "repeats": repeats,
            "device": str(device),
            "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32",
            "threads": torch.get_num_threads(),
            "weights": "seeded random",
        },
    }


def train_step(task, batch: dict, train: TrainConfig, device: torch.device) -> Callable[[], None]:
    """One optimizer step as the training engine takes it: loss forward under autocast, backward,
    gradient clipping, the engine's optimizer as the config names it."""
    module = task.module
    module.train()
    optimizer = build_optimizer(module, train)
    seeds = itertools.count()

    def step() -> None:
        generator = torch.Generator(device).manual_seed(next(seeds))
        with autocast(device):
            loss, _ = task.loss(module, batch, generator)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), train.grad_clip or math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def top_ops(fn: Callable[[], object], device: torch.device, steps: int, top: int = TOP_OPS) -> list[dict]:
    """The profiler's `top` operators by self time over `steps` calls of `fn` (device time on CUDA).

    A regression in one kernel, or a new copy in the hot path, shows up here before it hides in the total.
    """
    fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
        synchronize(device)
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda event: -getattr(event, attribute))
    total = sum(getattr(event, attribute) for event in events)
    return [
        {
            "op": event.key,
            "ms_per_step": getattr(event, attribute) / 1000 / steps,
            "share": getattr(event, attribute) / total,
            "calls_per_step": event.count / steps,
        }
        for event in events[:top]
    ]


def train_step_flops(task, batch: dict, device: torch.device) -> int:
    """Model FLOPs of one training step: the loss's forward, frozen backbone included (it runs every
    step), and its backward. The optimizer's elementwise work counts as 0, as in the usual MFU."""
    module = task.module
    module.train()
    generator = torch.Generator(device).manual_seed(0)

    def forward_backward() -> None:
        loss, _ = task.loss(module, batch, generator)
        loss.backward()

    flops = count_flops(forward_backward)
    module.zero_grad(set_to_none=True)
    return flops


def tokenizer_training(settings: Settings, device: torch.device, peak_gflops: float) -> dict:
    """Clips/s of the tiny tokenizer's training step, and its MFU: model FLOPs per second over the matmul peak."""
    run = to_object(load_config(TokenizerRunConfig, REPO / TINY_TOKENIZER.path))
    torch.manual_seed(run.seed)
    tokenizer = Tokenizer.build(TokenizerConfig(backbone=run.backbone, model=run.model))
    task = TokenizerTask(tokenizer, feature_grid=tokenizer.backbone.grid(run.data.frame_size, run.data.frame_size))
    task.to(device)
    batch_size = run.train.batch_size if settings.train_batch is None else settings.train_batch
    batch = random_clip(batch_size, run.data.num_frames, run.data.frame_size, device)
    step = train_step(task, batch, run.train, device)
    seconds = median_seconds(step, settings, device)
    ops = top_ops(step, device, settings.profile_steps)
    flops = train_step_flops(task, batch, device)
    achieved = flops / seconds / 1e9
    # The same step on features served by a FeaturePool (run.feature_pool): the frozen backbone's share is gone.
    with torch.no_grad():
        pooled = {"features": tokenizer.features(batch["frames"])}
    pooled_seconds = median_seconds(train_step(task, pooled, run.train, device), settings, device)
    return {
        "batch_size": batch_size,
        "num_frames": run.data.num_frames,
        "frame_size": run.data.frame_size,
        "step_ms": 1000 * seconds,
        "pooled_step_ms": 1000 * pooled_seconds,
        "clips_per_s": batch_size / seconds,
        "step_gflop": flops / 1e9,
        "achieved_gflops": achieved,
        "mfu": achieved / peak_gflops,
        "top_ops": ops,
    }


def world_model_training(settings: Settings, device: torch.device) -> dict:
    """Clips/s of the tiny DeltaWorld's best-of-many training step as configured, and with each of
    BOM_HYPOTHESES noise queries per target instead (the rest of the config unchanged), on the same batch."""
    torch.manual_seed(0)
    tokenizer = build_tokenizer(TINY_TOKENIZER)
    configured = load_world_run(TINY_WORLD).model.objective.num_hypotheses
    results: dict = {"configured_num_hypotheses": configured}
    for hypotheses in sorted({configured, *BOM_HYPOTHESES}, reverse=True):
        run = load_world_run(ModelSource(TINY_WORLD.path, (f"model.objective.num_hypotheses={hypotheses}",)))
        torch.manual_seed(run.seed)
        world = build_world_model(tokenizer, run.model)
        task = WorldModelTask(world, run.eval.context, run.eval.horizons, run.model.num_samples, run.seed)
        task.to(device)
        batch_size = run.train.batch_size if settings.train_batch is None else settings.train_batch
        batch = random_clip(batch_size, run.data.num_frames, run.data.frame_size, device)
        seconds = median_seconds(train_step(task, batch, run.train, device), settings, device)
        results[f"bom{hypotheses}"] = {
            "batch_size": batch_size,
            "num_frames": run.data.num_frames,
            "step_ms": 1000 * seconds,
            "clips_per_s": batch_size / seconds,
        }
        if hypotheses == configured:
            # The same step on the batch's tokens as a token cache holds them (worldmodel.token_cache).
            with torch.no_grad():
                tokens, _ = tokenizer.tokenize(batch["frames"])
            cached = median_seconds(
                train_step(task, {"tokens": tokens, "timestamps": batch["timestamps"]}, run.train, device),
                settings,
                device,
            )
            token_bytes = run.data.num_frames * (tokens.shape[-1] * 4 + 4)  # fp32 tokens and timestamps per clip
            results["cached_tokens"] = {
                "num_hypotheses": hypotheses,
                "step_ms": 1000 * cached,
                "clips_per_s": batch_size / cached,
                "cached_over_on_the_fly_speedup": seconds / cached,
                "cache_mib_per_1000_clips": token_bytes * 1000 / 2**20,
            }
    return results


# --- the report -----------------------------------------------------------------------------------------


def target(name: str, value: float, bound: float, at_most: bool) -> dict:
    return {
        "name": name,
        "value": value,
        "target": f"{'<=' if at_most else '>='} {bound:g}",
        "met": bool(value <= bound if at_most else value >= bound),
    }


def targets(report: dict) -> list[dict]:
    return [
        # The predictor should cost at most 5% of decoding an imagined frame at the paper's size.
        target(
            "predictor_over_decode_flops_vitb_512",
            report["flop_ratios"]["vitb_512"]["predictor_over_decode"],
            0.05,
            at_most=True,
        ),
        target("bom256_over_bom1_step_time", report["bom256_over_bom1_step_time"], 2.0, at_most=True),
        target("mfu_train_tokenizer_tiny", report["mfu_train_tokenizer_tiny"], 0.5, at_most=False),
        # At a size where planning is FLOP-bound, the token cost plans at least 50x faster than DINOWorld
        # (LeWM reports up to 48x over DINO-WM).
        target(
            f"dinoworld_over_deltaworld_token_planning_step_{report['settings']['planning_scale']}",
            report[f"planning_{report['settings']['planning_scale']}"]["time_ratios"][
                "dinoworld_over_deltaworld_token"
            ],
            50.0,
            at_most=False,
        ),
        # Training on a token cache skips the frozen tokenizer: at least 5x the clips/s of tokenizing every step.
        target(
            "world_model_cached_over_on_the_fly_speedup",
            report["world_model_training"]["cached_over_on_the_fly_speedup"],
            5.0,
            at_most=False,
        ),
    ]


def show(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(show(item) for item in value) or "none"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


SEARCH_LABELS = {
    "deltaworld_token": "DeltaWorld, token cost (readout, nothing decoded)",
    "deltaworld_feature": "DeltaWorld, feature cost (every imagined step decoded)",
    "dinoworld": "DINOWorld (every patch predicted)",
}


def scale_planning_table(section: dict) -> list[str]:
    """`scale_planning`'s figures, one row per method."""
    cfg, planner = section["settings"], section["settings"]["planner"]
    dino = section["seconds_per_planning_step"]["dinoworld"]
    return [
        f"CEM planning step at {cfg['scale']} ({cfg['frame_size']} px, {cfg['patches']} patches, width "
        f"{cfg['width']}; {planner['candidates']} candidates x {planner['horizon']} steps x {planner['iterations']} "
        f"iterations; {cfg['device']}, {cfg['dtype']}; {cfg['timed']}; repeats "
        f"{', '.join(f'{k} {v}' for k, v in cfg['repeats'].items())}):",
        "",
        "| method | s per planning step | DINOWorld / method | GFLOP per planning step | achieved GFLOP/s | s per "
        "env step (with observing) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {SEARCH_LABELS[name]} | {seconds:.4g} | {dino / seconds:.3g}x | "
            f"{section['flops_per_planning_step'][name] / 1e9:,.1f} | "
            f"{section['achieved_gflops'][name]:.3g} | {section['seconds_per_env_step'][name]:.4g} |"
            for name, seconds in section["seconds_per_planning_step"].items()
        ),
        "",
        "Observing (taking in the new frame, the context's tokens kept; restarting from every context frame): "
        + "; ".join(
            f"{name} {section['seconds_to_observe'][name]:.4g} s, "
            f"{section['flops_to_observe'][name] / 1e9:,.1f} GFLOP (restarting "
            f"{section['seconds_to_observe_restarting'][name]:.4g} s, "
            f"{section['flops_to_observe_restarting'][name] / 1e9:,.1f} GFLOP)"
            for name in section["seconds_to_observe"]
        ),
    ]


def markdown(report: dict) -> str:
    machine = report["machine"]
    lines = [
        "# DeltaWorld benchmark" + (" (--quick: timings are not meaningful)" if report["quick"] else ""),
        "",
        f"{machine['device']} | {machine['cpu_model']}, {machine['usable_cores']} of {machine['cores']} cores, "
        f"{machine['threads']} torch threads | torch {machine['torch']}, python {machine['python']}, accelerate "
        f"{machine['accelerate']} | load average at start "
        f"{', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])} | {report['seconds']:.0f} s",
        "",
        *(
            [
                f"**Other processes took CPU during {', '.join(report['disturbed_phases'])}: those timings are "
                "disturbed (see phases.*.other_processes_cpu_share).**",
                "",
            ]
            if report["disturbed_phases"]
            else []
        ),
        "| target | value | target | met |",
        "| --- | --- | --- | --- |",
        *(
            f"| {t['name']} | {show(t['value'])} | {t['target']} | {'yes' if t['met'] else 'NO'} |"
            for t in report["targets"]
        ),
        "",
        "| measurement | value |",
        "| --- | --- |",
    ]
    skip = ("machine", "targets", "quick", "seconds")
    lines += [
        f"| {key} | {show(value)} |"
        for key, value in flatten({k: v for k, v in report.items() if k not in skip}).items()
        if not key.endswith("top_ops")
    ]
    lines += ["", *scale_planning_table(report[f"planning_{report['settings']['planning_scale']}"])]
    ops = report["train_tokenizer_tiny"]["top_ops"]
    lines += [
        "",
        f"Tokenizer training step, top {len(ops)} operators by self time:",
        "",
        "| operator | ms per step | share | calls per step |",
        "| --- | ---: | ---: | ---: |",
        *(f"| {op['op']} | {op['ms_per_step']:.2f} | {op['share']:.1%} | {op['calls_per_step']:g} |" for op in ops),
    ]
    return "\n".join(lines) + "\n"


def run_benchmark(settings: Settings, quick: bool) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    phases = Phases(device)
    report: dict = {"machine": machine_info(device), "quick": quick, "settings": asdict(settings)}

    with phases("matmul_peak"):
        peak = matmul_peak(settings, device)
    report["matmul_peak_gflops"] = peak["gflops"]
    report["matmul_peak"] = peak

    with phases("flop_count"):
        costs = {name: imagined_frame_cost(scale, "meta") for name, scale in SCALES.items()}
        # Meta-device counts stand in for real ones; at tiny, check them against a real run.
        real_tiny = imagined_frame_cost(SCALES["tiny"], device)
    report["params"] = {name: cost["params"] for name, cost in costs.items()}
    report["flops_per_imagined_frame"] = {name: cost["flops"] for name, cost in costs.items()}
    report["flop_ratios"] = {name: flop_ratios(cost["flops"]) for name, cost in costs.items()}
    report["flop_settings"] = {
        name: {key: cost[key] for key in ("frame_size", "patches", "context")} | {"samples": 1, "counted_on": "meta"}
        for name, cost in costs.items()
    }
    report["flops_meta_matches_real_tiny"] = real_tiny["flops"] == costs["tiny"]["flops"]

    with phases("imagination_latency"):
        torch.manual_seed(0)
        tokenizer = build_tokenizer(TINY_TOKENIZER).to(device).eval()
        runs = {
            "deltaworld": load_world_run(SCALES["tiny"].deltaworld),
            "dinoworld": load_world_run(SCALES["tiny"].dinoworld),
        }
        report["latency_ms_per_imagined_frame"] = {
            f"{name}_tiny": imagination_ms(inference_world(tokenizer, run).to(device), run, settings, device)
            for name, run in runs.items()
        }
        report["latency_settings"] = {
            "batch": 1,
            "samples": runs["deltaworld"].model.num_samples,
            "context": runs["deltaworld"].eval.context,
            "horizon": settings.horizon,
        }

    with phases("planning_latency"):
        plan = planning(settings)
    report["latency_ms_per_planning_step"] = plan["ms_per_planning_step"]
    report["planning_settings"] = {**plan["planner"], "device": plan["device"]}

    with phases(f"planning_{settings.planning_scale}"):
        report[f"planning_{settings.planning_scale}"] = scale_planning(
            settings.planning_scale, plan_bench_config(settings).planner, settings, device
        )

    with phases("train_tokenizer"):
        tokenizer_train = tokenizer_training(settings, device, peak["gflops"])
    with phases("train_world_model"):
        world_train = world_model_training(settings, device)
    configured = world_train[f"bom{world_train['configured_num_hypotheses']}"]
    report["train_clips_per_s"] = {
        "tokenizer_tiny": tokenizer_train["clips_per_s"],
        "world_model_tiny": configured["clips_per_s"],
    }
    report["train_tokenizer_tiny"] = tokenizer_train
    report["train_world_model_tiny"] = world_train
    report["world_model_training"] = {
        "cached_over_on_the_fly_speedup": world_train["cached_tokens"]["cached_over_on_the_fly_speedup"],
        "cache_mib_per_1000_clips": world_train["cached_tokens"]["cache_mib_per_1000_clips"],
    }
    report["bom256_over_bom1_step_time"] = world_train["bom256"]["step_ms"] / world_train["bom1"]["step_ms"]
    report["mfu_train_tokenizer_tiny"] = tokenizer_train["mfu"]

    report["phases"] = phases.records
    report["disturbed_phases"] = [
        name for name, record in phases.records.items() if record["other_processes_cpu_share"] > DISTURBED_SHARE
    ]
    report["peak_memory_mb"] = max(record["peak_memory_mb"] for record in phases.records.values())
    report["peak_memory_kind"] = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss_cumulative"
    report["targets"] = targets(report)
    report["seconds"] = time.perf_counter() - started
    return report


@dataclass
class BenchRunConfig:
    out: str = "runs/bench"  # folder for report.json and report.md
    quick: bool = False  # few repeats and small batches: checks the benchmark runs, timings mean little
    # Torch CPU threads; null = PyTorch's default (one per core). On a busy machine ask for no more than the idle
    # cores: OpenMP threads waiting on a preempted peer slow small ops tenfold and more.
    threads: int | None = None


FLAGS = {
    "--out": Flag("out", "folder for report.json and report.md"),
    "--quick": Flag("quick", "few repeats and small batches (timings mean little)", bool),
    "--threads": Flag("threads", "torch CPU threads (default: one per core)", int),
}


def main(argv: list[str] | None = None) -> dict:
    run = to_object(
        parse_run_config(BenchRunConfig, __doc__, "a YAML with out: and threads:", argv, FLAGS, default_config=None)
    )
    use_threads(run.threads, "threads")
    report = run_benchmark(QUICK if run.quick else FULL, run.quick)
    out = Path(run.out)
    table = markdown(report)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "report.md", table)
    print(table)
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    return report


if __name__ == "__main__":
    run_cli(main)
