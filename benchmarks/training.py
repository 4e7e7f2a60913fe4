"""How fast the tiny tokenizer and DeltaWorld train: clips/s of an optimizer step as the training engine takes it,
the tokenizer step's model FLOPs utilisation (MFU) and per-operator profile, best-of-many's step time at each of
BOM_HYPOTHESES noise queries, and the world model's step on cached tokens against tokenizing every step."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.flops import (
    REPO,
    TINY_TOKENIZER,
    TINY_WORLD,
    ModelSource,
    build_tokenizer,
    count_flops,
    load_world_run,
    random_clip,
)
from benchmarks.timing import Settings, median_seconds, synchronize
from tokenizer.model import Tokenizer, TokenizerConfig
from tokenizer.run_config import TokenizerRunConfig
from tokenizer.runtime.config import load_config, to_object
from tokenizer.runtime.devices import autocast
from tokenizer.runtime.optim import build_optimizer
from tokenizer.runtime.run_config import TrainConfig
from tokenizer.training import TokenizerTask
from worldmodel.training import WorldModelTask
from worldmodel.world import build_world_model

TOP_OPS = 12  # operators listed in the tokenizer step's profile
BOM_HYPOTHESES = (256, 1)  # best-of-many training cost: the paper's 256 noise queries per target against one


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
