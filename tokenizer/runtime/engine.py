"""The training engine both train scripts share, on Hugging Face Accelerate.

One loop for the tokenizer and the world model: a `Task` says what is trained
and how a batch becomes a loss; the engine does the rest the same way on a CPU,
one GPU, or many processes under `accelerate launch`: gradient clipping and
accumulation to an effective batch, bf16 autocast where the hardware has it
(fp32 on CPU), a tqdm bar, Accelerate trackers, an optional moving average of
the weights (`train.ema_decay`), periodic atomic checkpoints, resume, a stop at
the first non-finite loss, and a final validation printed against its baseline.

Its parts live beside it in tokenizer.runtime: the config it reads (run_config),
the optimizer and LR schedule (optim: AdamW or Muon, warmup then constant, cosine
or warmup-stable-decay, per-module LR multipliers), the processes and precision
(devices), the run's folder and loss log (run_folder), checkpoints (checkpoints)
and the weight average (ema). `train` is read as its steps: set up the
accelerator, claim the output folder, restore or start, open the logs, the step
loop (each step's micro-steps, then logging, checkpoint and validation on their
schedules), and the end (final validation, final/, metrics.json).

Randomness is stateless: clip ids and model noise at optimizer step s come from
(seed, s, micro-step, rank), so a resumed run draws exactly what the
uninterrupted one would have.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import ProjectConfiguration, gather_object
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from tokenizer.runtime.checkpoints import (
    checkpoint_path,
    checkpoint_problems,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)
from tokenizer.runtime.config import flatten, save_config
from tokenizer.runtime.devices import (
    check_fits_in_memory,
    launched_on_cpu,
    mixed_precision,
    use_threads,
    worker_start_method,
)
from tokenizer.runtime.ema import EMA, EMA_FILE
from tokenizer.runtime.errors import CheckpointError, ConfigError, Interrupted, TrainingError
from tokenizer.runtime.files import weights_digest
from tokenizer.runtime.optim import apply_lr, build_optimizer
from tokenizer.runtime.run_config import TrainConfig
from tokenizer.runtime.run_folder import (
    CHECKPOINTS,
    FINAL,
    LOSS_LOG,
    METRICS,
    RUN_CONFIG,
    LossLog,
    check_same_model,
    claim_output_folder,
    prepare_output_dir,
    write_final,
)


class Task(Protocol):
    """What a training run trains: the engine prepares `module` and calls the rest."""

    name: str
    module: nn.Module

    def to(self, device: torch.device) -> None:
        """Move everything the task computes with (the trained module and any frozen one) to `device`."""
        ...

    def use_attention_backend(self, backend: str) -> None:
        """Run the trained module's attention with `backend` (train.attention_backend: sdpa | xformers).

        The task does it, not the engine: which layers attend is the model layer's knowledge, and the
        runtime imports nothing from it.
        """
        ...

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one micro-batch: a () tensor to backpropagate, and extra figures to log.

        `model` is `module` as Accelerate wraps it; `batch` holds the training set's collated tensors (B, ...) on
        the device; `generator` (seeded from seed, step, micro-step and rank) draws all of the step's noise.
        """
        ...

    def val_figures(self, model: nn.Module, batch: dict) -> dict[str, tuple[torch.Tensor, int]]:
        """Validation figures of one batch: name -> (values, count). The values (any shape) are summed over the
        batches and processes, as are the counts; the figure is their ratio."""
        ...

    def derived(self, metrics: dict[str, float]) -> dict[str, float]:
        """Figures computed from the validation means (ratios of them), logged and saved beside them."""
        ...

    def summary(self, metrics: dict[str, float]) -> str:
        """The final validation in words, printed at the end of a run."""
        ...

    def save_final(self, model: nn.Module, folder: Path) -> None:
        """Write the trained model into `folder` (a new folder that becomes the run's final/)."""
        ...


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
    """The batch's tensors moved to `device`; other values (lists of names) as they are."""
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def evaluate(
    accelerator: Accelerator, task: Task, model: nn.Module, val_set: Dataset, batch_size: int
) -> dict[str, float]:
    """The mean of each of the task's validation figures over `val_set`, then the task's derived figures.

    Each process takes every world-th clip; sums and counts are reduced over processes.
    """
    indices = list(range(accelerator.process_index, len(val_set), accelerator.num_processes))
    loader = DataLoader(torch.utils.data.Subset(val_set, indices), batch_size=batch_size)
    sums: dict[str, torch.Tensor] = {}
    was_training = model.training
    model.eval()
    with torch.no_grad(), accelerator.autocast():
        progress = tqdm(
            loader,
            desc="validating",
            unit="batch",
            disable=not accelerator.is_local_main_process,
            dynamic_ncols=True,
            leave=False,
        )
        for batch in progress:
            for name, (value, count) in task.val_figures(model, _to_device(batch, accelerator.device)).items():
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


@dataclass
class _Processes:
    """This process's Accelerator, and how each optimizer step's clips are spread over processes and micro-steps."""

    accelerator: Accelerator
    world: int  # processes in the run
    rank: int  # this process's index among them
    accum: int  # micro-steps per optimizer step (gradient accumulation)
    effective: int  # clips per optimizer step over all processes: train.batch_size x world x accum


@dataclass
class _Trained:
    """What the step loop works on: the module, its wrapped forms, and where the run (re)starts."""

    module: nn.Module  # the task's module: checkpoints, the average, validation and final/ read it
    model: nn.Module | None  # the module as Accelerate (and torch.compile) wrap it, for forward and backward
    optimizer: torch.optim.Optimizer | None  # Accelerate's wrapper of the configured optimizer
    ema: EMA | None  # the moving average of the weights (train.ema_decay > 0), else None
    start_step: int  # the first optimizer step to take: 0, or the step of the checkpoint resumed from
    last_checkpoint: Path | None  # the newest complete checkpoint, resumed from or written
    reached: int  # optimizer steps done so far, for the message of an interrupted run


@dataclass
class _Step:
    """One optimizer step's outcome, as the micro-step that synchronised gradients left it."""

    step: int  # the optimizer step (0-based)
    loss: torch.Tensor  # () float32: this process's mean loss over the step's micro-steps
    grad_norm: torch.Tensor  # (): the global gradient norm before clipping
    logs: dict[str, float]  # the task's extra figures of the last micro-step
    diverged: bool  # the loss or the gradient norm was non-finite on some process: the step was not applied
    skipped_files: int  # clip loads of this step, on this process, that skipped an unreadable data file


class _Throughput:
    """Clips per second since the window last restarted (at the previous logged step)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        self.start, self.clips = time.perf_counter(), 0

    def rate(self) -> float:
        return self.clips / max(time.perf_counter() - self.start, 1e-9)


def train(run: DictConfig, task: Task, train_set: Dataset, val_set: Dataset | None) -> dict[str, float]:
    """Train `task` as configured by `run` (output_dir, seed, resume, overwrite, train.*); returns final validation
    metrics."""
    cfg: TrainConfig = OmegaConf.to_object(run.train)
    cfg.validate(task.module)
    use_threads(cfg.threads, "train.threads")
    check_batch_memory(run, cfg)
    procs = _set_up_accelerator(cfg, Path(run.output_dir))
    # Everything that can be refused is, before output_dir is touched: a failed start leaves the old run as it was.
    _check_output_dir(run)
    trained = _restore_or_start(run, cfg, task, procs.accelerator)
    _claim_output_dir(run, procs.accelerator)
    try:
        loss_log = _open_logs(run, task, procs.accelerator, trained.start_step)
        _announce(run, cfg, task, procs, trained)
        skipped_files, diverged = _step_loop(run, cfg, task, train_set, val_set, procs, trained, loss_log)
        if diverged is not None:
            _stop_at_divergence(procs.accelerator, trained, diverged)
        return _finish(run, cfg, task, val_set, procs, trained, skipped_files)
    except KeyboardInterrupt:
        _stop_at_interrupt(procs.accelerator, cfg, trained)


def check_batch_memory(run: DictConfig, cfg: TrainConfig) -> None:
    """Refuse a batch whose frames alone (as float32 pixels) would not fit in the host's memory, before an
    allocation that would take the machine down with it."""
    frame_size = OmegaConf.select(run, "data.frame_size", default=None)
    num_frames = OmegaConf.select(run, "data.num_frames", default=None)
    if frame_size is None or num_frames is None:
        return
    check_fits_in_memory(
        cfg.batch_size * num_frames * 3 * frame_size**2 * 4,
        f"a batch of train.batch_size {cfg.batch_size} clips of data.num_frames {num_frames} frames of "
        f"data.frame_size {frame_size}",
    )


def _set_up_accelerator(cfg: TrainConfig, output_dir: Path) -> _Processes:
    """Join the launched processes and build this one's Accelerator; ConfigError if the effective batch does not
    split into train.batch_size clips on every process."""
    cpu = launched_on_cpu()
    state = PartialState(cpu=cpu)
    world, rank = state.num_processes, state.process_index
    per_step = cfg.batch_size * world
    effective = per_step if cfg.effective_batch_size is None else cfg.effective_batch_size
    if effective % per_step:
        raise ConfigError(
            f"train.effective_batch_size {effective} is not a multiple of train.batch_size {cfg.batch_size} x "
            f"{world} processes"
        )
    accum = effective // per_step
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=mixed_precision(cfg.mixed_precision),
        gradient_accumulation_steps=accum,
        log_with=list(cfg.trackers) or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    return _Processes(accelerator, world, rank, accum, effective)


def _check_output_dir(run: DictConfig) -> None:
    """Refuse another run's folder unless resuming or overwriting it, a resume whose model config changed, and a
    resume with no readable checkpoint in a folder that holds one or a finished run. Touches nothing."""
    output_dir = Path(run.output_dir)
    # Every process checks, so each stops on its own and none waits for a failed peer.
    prepare_output_dir(output_dir, run.resume, run.overwrite)
    if not run.resume:
        return
    check_same_model(output_dir, run)
    checkpoints = output_dir / CHECKPOINTS
    if latest_checkpoint(checkpoints) is not None:
        return
    problems = [problem for path in list_checkpoints(checkpoints) for problem in checkpoint_problems(path)]
    finished = [name for name in (FINAL, METRICS) if (output_dir / name).exists()]
    if problems or finished:
        found = "; ".join(problems) if problems else f"{checkpoints} holds none, beside {', '.join(finished)}"
        raise CheckpointError(
            f"cannot resume {output_dir}: no readable checkpoint ({found}); pass overwrite=true instead of "
            "resume=true to train it again from step 0"
        )


def _claim_output_dir(run: DictConfig, accelerator: Accelerator) -> None:
    """The run is ready to write: with overwrite=true the old run goes now (the main process removes it)."""
    if accelerator.is_main_process and not run.resume:
        claim_output_folder(Path(run.output_dir))
    accelerator.wait_for_everyone()


def _restore_or_start(run: DictConfig, cfg: TrainConfig, task: Task, accelerator: Accelerator) -> _Trained:
    """Build the optimizer, load the newest checkpoint when resuming, and hand module and optimizer to Accelerate."""
    module = task.module
    task.use_attention_backend(cfg.attention_backend)
    optimizer = build_optimizer(module, cfg)
    last_checkpoint = latest_checkpoint(Path(run.output_dir) / CHECKPOINTS) if run.resume else None
    start_step, checksummed = 0, []  # checksummed: the files of the checkpoint resumed from
    if last_checkpoint is not None:
        start_step, checksummed = _resume(last_checkpoint, module, optimizer, cfg, accelerator)
    elif run.resume:
        accelerator.print(f"resume=true: {run.output_dir} holds no checkpoint yet, so training starts at step 0")
    task.to(accelerator.device)
    model, optimizer = accelerator.prepare(module, optimizer)
    ema = _weight_average(cfg, module, last_checkpoint, checksummed, accelerator)
    if cfg.compile:
        model = torch.compile(model)
    return _Trained(module, model, optimizer, ema, start_step, last_checkpoint, start_step)


def _resume(
    checkpoint: Path, module: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig, accelerator: Accelerator
) -> tuple[int, list[str]]:
    """Load `checkpoint` into `module` and `optimizer`; returns its step and the names of the files it checksums."""
    configured = [(group["weight_decay"], group["lr_scale"]) for group in optimizer.param_groups]
    state = load_checkpoint(checkpoint, module, optimizer)
    step, checksummed = state["step"], list(state["sha256"])
    if step > cfg.max_steps:
        raise ConfigError(
            f"{checkpoint} is at step {step}, past train.max_steps {cfg.max_steps}; raise train.max_steps to continue"
        )
    accelerator.print(f"resuming from {checkpoint} at step {step}")
    for group, (weight_decay, lr_scale) in zip(optimizer.param_groups, configured):
        # The config wins over hyper-parameters stored in a checkpoint.
        group["betas"], group["weight_decay"], group["lr_scale"] = tuple(cfg.betas), weight_decay, lr_scale
    return step, checksummed


def _weight_average(
    cfg: TrainConfig, module: nn.Module, checkpoint: Path | None, checksummed: list[str], accelerator: Accelerator
) -> EMA | None:
    """The moving average of the weights, continued from `checkpoint` where it holds one; None when
    train.ema_decay=0."""
    ema = EMA(module, cfg.ema_decay) if cfg.ema_decay else None
    if ema is not None and checkpoint is not None and not ema.load(checkpoint, checksummed):
        accelerator.print(f"{checkpoint} holds no weight average: the average starts from its weights")
    if ema is None and EMA_FILE in checksummed:
        accelerator.print(
            f"train.ema_decay=0: the weight average in {checkpoint} is left unused, and final/ will hold the last "
            "weights"
        )
    return ema


def _open_logs(run: DictConfig, task: Task, accelerator: Accelerator, start_step: int) -> LossLog:
    """Save the run's config, cut the loss log back to `start_step`, and start the trackers."""
    output_dir = Path(run.output_dir)
    loss_log = LossLog(output_dir / LOSS_LOG)
    if accelerator.is_main_process:
        save_config(run, output_dir / RUN_CONFIG)
        loss_log.truncate(start_step)
    accelerator.init_trackers(task.name, config=_tracker_config(run))
    return loss_log


def _tracker_config(run: DictConfig) -> dict[str, int | float | str | bool]:
    """The run config as trackers take hyper-parameters: one level of "section/key" names, other values as text."""
    flat = flatten(OmegaConf.to_container(run, resolve=True), separator="/")
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in flat.items()}


def _announce(run: DictConfig, cfg: TrainConfig, task: Task, procs: _Processes, trained: _Trained) -> None:
    """One line: what trains where, in which precision, with which batch, over which steps."""
    accelerator, world, accum = procs.accelerator, procs.world, procs.accum
    accelerator.print(
        f"training {task.name} on {accelerator.device.type} "
        f"({accelerator.mixed_precision if accelerator.mixed_precision != 'no' else 'fp32'}), {world} "
        f"process{'es' if world > 1 else ''}, effective batch {procs.effective} = {cfg.batch_size} per process x "
        f"{world} x {accum} accumulation step{'s' if accum > 1 else ''}; steps {trained.start_step} -> "
        f"{cfg.max_steps}"
        + (
            f", from the weights of init_from={run.init_from}"
            if run.init_from and trained.last_checkpoint is None
            else ""
        )
    )


def _step_loop(
    run: DictConfig,
    cfg: TrainConfig,
    task: Task,
    train_set: Dataset,
    val_set: Dataset | None,
    procs: _Processes,
    trained: _Trained,
    loss_log: LossLog,
) -> tuple[int, _Step | None]:
    """Optimizer steps from `trained.start_step` to train.max_steps, each logged, checkpointed and validated on its
    schedule.

    Returns this process's clip loads that skipped an unreadable data file, and the step whose loss or gradient
    was non-finite (None when none was): the loop stops there, before applying it.
    """
    accelerator = procs.accelerator
    loader = DataLoader(
        train_set,
        batch_sampler=StepBatches(
            trained.start_step, cfg.max_steps, procs.accum, cfg.batch_size, procs.rank, procs.world
        ),
        num_workers=cfg.num_workers,
        multiprocessing_context=worker_start_method(cfg.num_workers),
        pin_memory=accelerator.device.type == "cuda",
        prefetch_factor=4 if cfg.num_workers > 0 else None,
        persistent_workers=cfg.num_workers > 0,
    )
    batches = iter(loader)
    bar = tqdm(
        total=cfg.max_steps,
        initial=trained.start_step,
        disable=not accelerator.is_local_main_process,
        dynamic_ncols=True,
    )
    trained.model.train()
    skipped_files = 0
    window = _Throughput()
    # Closing the bar on the way out keeps an error message off the bar's line, and warnings
    # (a skipped data file) go through the bar so they print above it instead of onto it.
    try:
        with logging_redirect_tqdm():
            for step in range(trained.start_step, cfg.max_steps):
                lr = apply_lr(trained.optimizer, step, cfg)
                result = _optimizer_step(run.seed, step, cfg, task, batches, procs, trained)
                skipped_files += result.skipped_files
                if result.diverged:
                    return skipped_files, result
                window.clips += procs.effective
                done = trained.reached = step + 1
                bar.update(1)
                if done % cfg.log_every == 0 or done == cfg.max_steps:
                    _log_step(accelerator, bar, loss_log, window, done, lr, result)
                if done % cfg.checkpoint_every == 0 or done == cfg.max_steps:
                    _save_checkpoint(run, cfg, accelerator, trained, done)
                if val_set is not None and cfg.val_every and done % cfg.val_every == 0 and done != cfg.max_steps:
                    with trained.ema.swapped_in() if trained.ema is not None else nullcontext():
                        _evaluate_and_log(accelerator, task, trained.module, val_set, cfg.batch_size, done)
    finally:
        bar.close()
    return skipped_files, None


def _optimizer_step(
    seed: int, step: int, cfg: TrainConfig, task: Task, batches: Iterator[dict], procs: _Processes, trained: _Trained
) -> _Step:
    """Accumulate `procs.accum` micro-steps' gradients, then clip them and step, unless the loss or the gradient
    norm is non-finite on any process: then no process applies the step."""
    accelerator, model, optimizer = procs.accelerator, trained.model, trained.optimizer
    losses, skipped_files = [], 0
    for micro in range(procs.accum):
        batch = _to_device(next(batches), accelerator.device)
        if "num_skipped" in batch:
            skipped_files += int(batch.pop("num_skipped").sum())
        generator = torch.Generator(accelerator.device).manual_seed(mix_seed(seed, step, micro, procs.rank))
        with accelerator.accumulate(model), accelerator.autocast():
            loss, logs = task.loss(model, batch, generator)
            losses.append(loss.detach().float())
            accelerator.backward(loss)
            # Accelerate synchronises gradients on the last micro-step of the step, and only then is there
            # a whole step to check and apply.
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
                step_loss = torch.stack(losses).mean()
                bad = accelerator.reduce(
                    (~torch.isfinite(torch.stack([step_loss, grad_norm.float()]))).float().sum(), "sum"
                )
                diverged = bad.item() > 0
                if not diverged:
                    optimizer.step()
                    if trained.ema is not None:
                        trained.ema.update()
            optimizer.zero_grad(set_to_none=True)
    return _Step(step, step_loss, grad_norm, logs, diverged, skipped_files)


def _log_step(
    accelerator: Accelerator, bar: tqdm, loss_log: LossLog, window: _Throughput, done: int, lr: float, result: _Step
) -> None:
    """Loss (averaged over processes), LR, gradient norm and throughput to the bar, the trackers and the loss log."""
    rate = window.rate()
    step_loss = accelerator.reduce(result.loss, "mean").item()
    grad_norm = result.grad_norm.item()
    bar.set_postfix(loss=f"{step_loss:.4f}", clips_per_s=f"{rate:.1f}")
    accelerator.log(
        {
            "train/loss": step_loss,
            "train/lr": lr,
            "train/grad_norm": grad_norm,
            "train/clips_per_s": rate,
            **{f"train/{k}": v for k, v in result.logs.items()},
        },
        step=done,
    )
    if accelerator.is_main_process:
        loss_log.append({"step": done, "loss": step_loss, "lr": lr, "grad_norm": grad_norm})
    window.restart()


def _save_checkpoint(run: DictConfig, cfg: TrainConfig, accelerator: Accelerator, trained: _Trained, done: int) -> None:
    """Write the checkpoint of step `done` (main process), keep the newest train.keep_checkpoints, and remember it."""
    checkpoint_dir = Path(run.output_dir) / CHECKPOINTS
    if accelerator.is_main_process:
        save_checkpoint(checkpoint_dir, done, trained.module, trained.optimizer, {"seed": run.seed}, trained.ema)
        prune_checkpoints(checkpoint_dir, cfg.keep_checkpoints)
    accelerator.wait_for_everyone()
    trained.last_checkpoint = checkpoint_path(checkpoint_dir, done)


def _evaluate_and_log(
    accelerator: Accelerator, task: Task, module: nn.Module, val_set: Dataset, batch_size: int, step: int
) -> dict[str, float]:
    """`evaluate`, its figures logged to the trackers as val/<name> at `step`."""
    metrics = evaluate(accelerator, task, module, val_set, batch_size)
    accelerator.log({f"val/{k}": v for k, v in metrics.items()}, step=step)
    return metrics


def _release(accelerator: Accelerator, trained: _Trained) -> None:
    """Drop the wrapped model and optimizer, then end Accelerate's state and trackers."""
    # DDP's reducer must be gone before its process group: torn down after it, a rank can hang at exit.
    trained.model = trained.optimizer = None
    accelerator.free_memory()
    accelerator.end_training()


def _stop_at_divergence(accelerator: Accelerator, trained: _Trained, result: _Step) -> None:
    """Release the processes, then raise TrainingError naming the step, its loss and the checkpoint to resume from."""
    _release(accelerator, trained)
    where = (
        f"the last good checkpoint is {trained.last_checkpoint}"
        if trained.last_checkpoint
        else "no checkpoint was written yet"
    )
    raise TrainingError(
        f"loss or gradient became non-finite at step {result.step} (loss {result.loss.item():.4g}); stopped before "
        f"applying it, {where}: lower train.lr or check the data, then resume=true"
    )


def _stop_at_interrupt(accelerator: Accelerator, cfg: TrainConfig, trained: _Trained) -> None:
    """Ctrl-C: release the processes, then raise Interrupted naming the step reached and how to continue."""
    _release(accelerator, trained)
    where = (
        f"the last checkpoint is {trained.last_checkpoint}"
        if trained.last_checkpoint
        else "no checkpoint was written yet (it starts again from step 0)"
    )
    raise Interrupted(
        f"interrupted after step {trained.reached} of {cfg.max_steps}; {where}: run the same command with "
        "resume=true to continue"
    )


def _finish(
    run: DictConfig,
    cfg: TrainConfig,
    task: Task,
    val_set: Dataset | None,
    procs: _Processes,
    trained: _Trained,
    skipped_files: int,
) -> dict[str, float]:
    """The end: validate the final weights, write final/ and metrics.json, release the processes, print a summary."""
    accelerator, world, output_dir = procs.accelerator, procs.world, Path(run.output_dir)
    if trained.ema is not None:
        trained.ema.copy_to_module()  # the final weights, validation and the replicas' digest are the average's
    metrics = {}
    if val_set is not None:
        metrics = _evaluate_and_log(accelerator, task, trained.module, val_set, cfg.batch_size, cfg.max_steps)
    skipped_files = int(accelerator.reduce(torch.tensor(skipped_files, device=accelerator.device), "sum").item())
    # Replicas that drifted apart would mean a broken gradient sync; every process hashes what it holds.
    ranks_agree = len(set(gather_object([weights_digest(trained.module)]))) == 1
    if accelerator.is_main_process:
        summary = {
            "step": cfg.max_steps,
            "skipped_files": skipped_files,
            "num_processes": world,
            "ranks_agree": ranks_agree,
        }
        write_final(output_dir, lambda folder: task.save_final(trained.module, folder), summary, metrics)
    accelerator.wait_for_everyone()
    _release(accelerator, trained)
    if world > 1:
        accelerator.print(
            f"all {world} processes hold identical weights"
            if ranks_agree
            else f"warning: the {world} processes ended with different weights"
        )
    if skipped_files:
        accelerator.print(
            f"{skipped_files} clip loads skipped an unreadable data file (the warnings above name the files)"
        )
    if metrics:
        accelerator.print(task.summary(metrics))
    accelerator.print(f"saved {output_dir / FINAL}")
    return metrics
