"""The training engine both train scripts share, on Hugging Face Accelerate.

One loop for the tokenizer and the world model: a `Task` says what is trained
and how a batch becomes a loss; the engine does the rest the same way on a CPU,
one GPU, or many processes under `accelerate launch`:
AdamW (decay / no-decay groups) or Muon on the weight matrices (`train.optimizer`),
LR warmup then constant, cosine or warmup-stable-decay, per-module LR multipliers
(`train.lr_scale`), gradient clipping and accumulation to an
effective batch, bf16 autocast where the hardware has it (fp32 on CPU), a tqdm
bar, Accelerate trackers, an optional moving average of the weights
(`train.ema_decay`), periodic atomic checkpoints, resume, a stop at the first
non-finite loss, and a final validation printed against its baseline.

Randomness is stateless: clip ids and model noise at optimizer step s come from
(seed, s, micro-step, rank), so a resumed run draws exactly what the
uninterrupted one would have.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, Protocol

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import ProjectConfiguration, gather_object
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tokenizer.runtime.checkpoints import checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from tokenizer.runtime.config import flatten, save_config
from tokenizer.runtime.devices import launched_on_cpu, mixed_precision
from tokenizer.runtime.ema import EMA, EMA_FILE
from tokenizer.runtime.errors import ConfigError, TrainingError
from tokenizer.runtime.files import weights_digest
from tokenizer.runtime.optim import build_optimizer, lr_at
from tokenizer.runtime.run_config import TrainConfig
from tokenizer.runtime.run_folder import LOSS_LOG, RUN_CONFIG, LossLog, check_same_model, prepare_output_dir, write_final


class Task(Protocol):
    """What a training run trains: the engine prepares `module` and calls the rest."""

    name: str
    module: nn.Module

    def to(self, device: torch.device) -> None: ...

    def use_attention_backend(self, backend: str) -> None:
        """Run the trained module's attention with `backend` (train.attention_backend: sdpa | xformers).

        The task does it, not the engine: which layers attend is the model layer's knowledge, and the
        runtime imports nothing from it.
        """
        ...

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]: ...

    def validate(self, model: nn.Module, batch: dict) -> dict[str, tuple[torch.Tensor, int]]: ...

    def derived(self, metrics: dict[str, float]) -> dict[str, float]:
        """Figures computed from the validation means (ratios of them), logged and saved beside them."""
        ...

    def summary(self, metrics: dict[str, float]) -> str: ...

    def save_final(self, model: nn.Module, folder: Path) -> None: ...


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (splitmix64), so nearby steps get unrelated streams."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value ^ (int(part) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value = (value ^ (value >> 31)) * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
    return value >> 1


class StepBatches(Sampler[list[int]]):
    """Clip ids for every micro-step from `start_step`: a pure function of (step, micro, rank)."""

    def __init__(self, start_step: int, max_steps: int, accum: int, batch: int, rank: int, world: int):
        self.start_step, self.max_steps, self.accum = start_step, max_steps, accum
        self.batch, self.rank, self.world = batch, rank, world

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.max_steps):
            for micro in range(self.accum):
                base = ((step * self.accum + micro) * self.world + self.rank) * self.batch
                yield list(range(base, base + self.batch))

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.accum


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _tracker_config(run: DictConfig) -> dict[str, int | float | str | bool]:
    """The run config as trackers take hyper-parameters: one level of "section/key" names, other values as text."""
    flat = flatten(OmegaConf.to_container(run, resolve=True), separator="/")
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in flat.items()}


def validate(accelerator: Accelerator, task: Task, model: nn.Module, val_set: Dataset, batch_size: int) -> dict[str, float]:
    """Each process takes every world-th clip; sums and counts are reduced over processes."""
    indices = list(range(accelerator.process_index, len(val_set), accelerator.num_processes))
    loader = DataLoader(torch.utils.data.Subset(val_set, indices), batch_size=batch_size)
    sums: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        progress = tqdm(loader, desc="validating", unit="batch", disable=not accelerator.is_local_main_process, dynamic_ncols=True, leave=False)
        for batch in progress:
            for name, (value, count) in task.validate(model, _to_device(batch, accelerator.device)).items():
                pair = torch.stack([value.detach().float().sum(), torch.tensor(float(count), device=value.device)])
                sums[name] = sums.get(name, torch.zeros(2, device=accelerator.device)) + pair
    model.train(was_training)
    # Every process must enter the reduction with the same names, even one that got no clips.
    names = sorted(set().union(*gather_object([sorted(sums)])))
    results = {}
    for name in names:
        total = accelerator.reduce(sums.get(name, torch.zeros(2, device=accelerator.device)), "sum")
        results[name] = (total[0] / total[1].clamp(min=1)).item()
    return {**results, **task.derived(results)} if results else results


def train(run: DictConfig, task: Task, train_set: Dataset, val_set: Dataset | None) -> dict[str, float]:
    """Train `task` as configured by `run` (output_dir, seed, resume, overwrite, train.*); returns final validation metrics."""
    cfg: TrainConfig = OmegaConf.to_object(run.train)
    cfg.validate(task.module)
    output_dir = Path(run.output_dir)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)

    cpu = launched_on_cpu()
    state = PartialState(cpu=cpu)
    world, rank = state.num_processes, state.process_index
    per_step = cfg.batch_size * world
    effective = cfg.effective_batch_size or per_step
    if effective % per_step:
        raise ConfigError(
            f"train.effective_batch_size {effective} is not a multiple of train.batch_size {cfg.batch_size} x {world} processes"
        )
    accum = effective // per_step
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision(cfg.mixed_precision),
        gradient_accumulation_steps=accum,
        log_with=list(cfg.trackers) or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )

    # Every process checks (so each stops on its own, none waits for a failed peer); only the main one deletes.
    prepare_output_dir(output_dir, run.resume, run.overwrite, remove=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    if run.resume:
        check_same_model(output_dir, run)

    module = task.module
    task.use_attention_backend(cfg.attention_backend)
    optimizer = build_optimizer(module, cfg)
    start_step = 0
    checkpoint_dir = output_dir / "checkpoints"
    last_checkpoint = latest_checkpoint(checkpoint_dir) if run.resume else None
    checksummed: list[str] = []  # the files of the checkpoint resumed from
    if last_checkpoint is not None:
        configured = [(group["weight_decay"], group["lr_scale"]) for group in optimizer.param_groups]
        state = load_checkpoint(last_checkpoint, module, optimizer)
        start_step, checksummed = state["step"], list(state["sha256"])
        if start_step > cfg.max_steps:
            raise ConfigError(f"{last_checkpoint} is at step {start_step}, past train.max_steps {cfg.max_steps}; raise train.max_steps to continue")
        accelerator.print(f"resuming from {last_checkpoint} at step {start_step}")
        for group, (weight_decay, lr_scale) in zip(optimizer.param_groups, configured):
            # The config wins over hyper-parameters stored in a checkpoint.
            group["betas"], group["weight_decay"], group["lr_scale"] = tuple(cfg.betas), weight_decay, lr_scale

    task.to(accelerator.device)
    model, optimizer = accelerator.prepare(module, optimizer)
    ema = EMA(module, cfg.ema_decay) if cfg.ema_decay else None
    if ema is not None and last_checkpoint is not None and not ema.load(last_checkpoint, checksummed):
        accelerator.print(f"{last_checkpoint} holds no weight average: the average starts from its weights")
    if ema is None and EMA_FILE in checksummed:
        accelerator.print(f"train.ema_decay=0: the weight average in {last_checkpoint} is left unused, and final/ will hold the last weights")
    if cfg.compile:
        model = torch.compile(model)
    loss_log = LossLog(output_dir / LOSS_LOG)
    if accelerator.is_main_process:
        save_config(run, output_dir / RUN_CONFIG)
        loss_log.truncate(start_step)
    accelerator.init_trackers(task.name, config=_tracker_config(run))

    accelerator.print(
        f"training {task.name} on {accelerator.device.type} ({accelerator.mixed_precision if accelerator.mixed_precision != 'no' else 'fp32'}), "
        f"{world} process{'es' if world > 1 else ''}, effective batch {effective} = {cfg.batch_size} per process x "
        f"{world} x {accum} accumulation step{'s' if accum > 1 else ''}; steps {start_step} -> {cfg.max_steps}"
        + (f", from the weights of init_from={run.init_from}" if run.init_from and last_checkpoint is None else "")
    )
    loader = DataLoader(
        train_set,
        batch_sampler=StepBatches(start_step, cfg.max_steps, accum, cfg.batch_size, rank, world),
        num_workers=cfg.num_workers,
        pin_memory=accelerator.device.type == "cuda",
        prefetch_factor=4 if cfg.num_workers > 0 else None,
        persistent_workers=cfg.num_workers > 0,
    )
    batches = iter(loader)
    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    model.train()
    skipped_files = 0
    window_start, window_clips = time.perf_counter(), 0

    diverged = False
    # Closing the bar on the way out keeps an error message off the bar's line, and warnings
    # (a skipped data file) go through the bar so they print above it instead of onto it.
    try:
        with logging_redirect_tqdm():
            for step in range(start_step, cfg.max_steps):
                lr = lr_at(step, cfg)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_scale"]
                losses = []
                for micro in range(accum):
                    batch = _to_device(next(batches), accelerator.device)
                    if "num_skipped" in batch:
                        skipped_files += int(batch.pop("num_skipped").sum())
                    generator = torch.Generator(accelerator.device).manual_seed(mix_seed(run.seed, step, micro, rank))
                    with accelerator.accumulate(model), accelerator.autocast():
                        loss, logs = task.loss(model, batch, generator)
                        losses.append(loss.detach().float())
                        accelerator.backward(loss)
                        if accelerator.sync_gradients:
                            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
                            step_loss = torch.stack(losses).mean()
                            bad = accelerator.reduce((~torch.isfinite(torch.stack([step_loss, grad_norm.float()]))).float().sum(), "sum")
                            diverged = bad.item() > 0
                            if not diverged:
                                optimizer.step()
                                if ema is not None:
                                    ema.update()
                        optimizer.zero_grad(set_to_none=True)
                if diverged:
                    break
                window_clips += effective
                done = step + 1
                bar.update(1)
                if done % cfg.log_every == 0 or done == cfg.max_steps:
                    elapsed = time.perf_counter() - window_start
                    step_loss = accelerator.reduce(step_loss, "mean").item()
                    rate = window_clips / max(elapsed, 1e-9)
                    bar.set_postfix(loss=f"{step_loss:.4f}", clips_per_s=f"{rate:.1f}")
                    accelerator.log({"train/loss": step_loss, "train/lr": lr, "train/grad_norm": grad_norm.item(), "train/clips_per_s": rate, **{f"train/{k}": v for k, v in logs.items()}}, step=done)
                    if accelerator.is_main_process:
                        loss_log.append({"step": done, "loss": step_loss, "lr": lr, "grad_norm": grad_norm.item()})
                    window_start, window_clips = time.perf_counter(), 0
                if done % cfg.checkpoint_every == 0 or done == cfg.max_steps:
                    if accelerator.is_main_process:
                        save_checkpoint(checkpoint_dir, done, module, optimizer, {"seed": run.seed}, ema)
                        prune_checkpoints(checkpoint_dir, cfg.keep_checkpoints)
                    accelerator.wait_for_everyone()
                    last_checkpoint = checkpoint_path(checkpoint_dir, done)
                if val_set is not None and cfg.val_every and done % cfg.val_every == 0 and done != cfg.max_steps:
                    with ema.swapped_in() if ema is not None else nullcontext():
                        metrics = validate(accelerator, task, module, val_set, cfg.batch_size)
                    accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=done)
    finally:
        bar.close()
    if diverged:
        # DDP's reducer must be gone before its process group: torn down after it, a rank can hang at exit.
        model = optimizer = None
        accelerator.free_memory()
        accelerator.end_training()
        where = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
        raise TrainingError(
            f"loss or gradient became non-finite at step {step} (loss {step_loss.item():.4g}); stopped before "
            f"applying it, {where}: lower train.lr or check the data, then resume=true"
        )

    if ema is not None:
        ema.copy_to_module()  # the final weights, validation and the replicas' digest are the average's
    metrics = {}
    if val_set is not None:
        metrics = validate(accelerator, task, module, val_set, cfg.batch_size)
        accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=cfg.max_steps)
    skipped_files = int(accelerator.reduce(torch.tensor(skipped_files, device=accelerator.device), "sum").item())
    # Replicas that drifted apart would mean a broken gradient sync; every process hashes what it holds.
    ranks_agree = len(set(gather_object([weights_digest(module)]))) == 1
    if accelerator.is_main_process:
        summary = {"step": cfg.max_steps, "skipped_files": skipped_files, "num_processes": world, "ranks_agree": ranks_agree}
        write_final(output_dir, lambda folder: task.save_final(module, folder), summary, metrics)
    accelerator.wait_for_everyone()
    model = optimizer = None  # before the process group, as above
    accelerator.free_memory()
    accelerator.end_training()
    if world > 1:
        accelerator.print(f"all {world} processes hold identical weights" if ranks_agree else f"warning: the {world} processes ended with different weights")
    if skipped_files:
        accelerator.print(f"{skipped_files} clip loads skipped an unreadable data file (the warnings above name the files)")
    if metrics:
        accelerator.print(task.summary(metrics))
    accelerator.print(f"saved {output_dir / 'final'}")
    return metrics
