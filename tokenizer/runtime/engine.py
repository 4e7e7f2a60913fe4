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

import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
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

from tokenizer.attention import set_attention_backend
from tokenizer.runtime.checkpoints import checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from tokenizer.runtime.config import save_config
from tokenizer.runtime.ema import EMA, EMA_FILE
from tokenizer.runtime.errors import CheckpointError, ConfigError, TrainingError
from tokenizer.runtime.files import atomic_write_text
from tokenizer.runtime.muon import MuonAdamW

RUN_CONFIG = "config.yaml"
RUN_MARKERS = (RUN_CONFIG, "checkpoints", "final", "logs", "metrics.json")
LOSS_LOG = Path("logs") / "train_loss.jsonl"
OPTIMIZERS = ("adamw", "muon")
LR_SCHEDULES = ("constant", "cosine", "wsd")


@dataclass
class RunConfig:
    """The fields every training run config starts with; `train` reads them."""

    output_dir: str = "runs/run"  # the run's folder: config.yaml, checkpoints/, logs/, final/ and metrics.json
    seed: int = 0  # seeds the model's initialisation and every step's clips and noise (with the step and rank)
    resume: bool = False  # continue from the newest complete checkpoint in output_dir
    overwrite: bool = False  # replace a run already in output_dir
    # Start the trained module from these weights (a run's final/ folder, or a released weights file) with a fresh
    # step count, optimizer, LR schedule and random stream: the next stage of a recipe. "" = its own initialisation.
    init_from: str = ""


@dataclass
class TrainConfig:
    """Optimisation, checkpoints and logging of the training loop (tokenizer.runtime.engine.train)."""

    max_steps: int = 1000  # optimizer steps of the whole run; a resumed run continues up to it
    batch_size: int = 16  # clips per process per micro-step
    effective_batch_size: int = 0  # clips per optimizer step over all processes; 0 = no accumulation
    lr: float = 1e-3  # peak learning rate, reached after warmup_steps
    # adamw | muon: Muon for the weight matrices of linear layers (their update RMS-matched to AdamW's, so lr and
    # weight_decay carry over), AdamW for the rest (tokenizer.runtime.muon)
    optimizer: str = "adamw"
    weight_decay: float = 0.01  # on the weights of linear and convolution layers; biases, norms and embeddings get none
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW's (and Muon's AdamW groups') moment decays
    warmup_steps: int = 0  # linear LR ramp from 0 over this many steps
    # constant | cosine (to 0 at max_steps) | wsd (constant, then linear to 0 over the last lr_decay_fraction of the
    # steps after warmup)
    lr_schedule: str = "constant"
    lr_decay_fraction: float = 0.2  # wsd: share of the post-warmup steps spent decaying, in (0, 1]
    # LR multipliers by parameter-name prefix of the trained module, e.g. {encoder_blocks: 3.0}: the longest
    # matching prefix wins, other parameters keep 1.0. A prefix that names no trainable parameter is an error.
    # Weight decay, applied as lr x weight_decay, scales with it. On the command line a prefix with dots goes
    # in brackets: train.lr_scale[encoder_blocks.0.mlp]=5.
    lr_scale: dict[str, float] = field(default_factory=dict)
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    # Keep an exponential moving average of the weights (tokenizer.runtime.ema) with this decay, and validate and
    # save it instead of the last weights; 0 = off. 0.999 averages over about the last 1,000 steps once its
    # warm-up is over (about 9,000 steps; a shorter run averages with the warm-up's decay).
    ema_decay: float = 0.0
    mixed_precision: str = "auto"  # auto (bf16 on GPUs that have it, fp32 on CPU) | no | bf16 | fp16
    checkpoint_every: int = 200  # save a resumable checkpoint every N steps, and at the last step
    keep_checkpoints: int = 2  # newest checkpoints kept in output_dir/checkpoints; older ones are deleted
    log_every: int = 10  # steps between loss, LR and throughput records (progress bar and trackers)
    val_every: int = 0  # validate every N steps as well as at the end; 0 = only at the end
    num_workers: int = 0  # DataLoader worker processes per training process
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])  # tensorboard, wandb, ...; [] = none
    compile: bool = False  # torch.compile the trained module
    attention_backend: str = "sdpa"  # sdpa | xformers (GPU)
    threads: int = 0  # torch CPU threads per process; 0 = PyTorch's default

    def validate(self, module: nn.Module | None = None) -> None:
        """Raise ConfigError naming the first choice that is not one of its options (and, given the trained module,
        the first lr_scale prefix that names none of its parameters)."""
        for key, value, options in (("optimizer", self.optimizer, OPTIMIZERS), ("lr_schedule", self.lr_schedule, LR_SCHEDULES)):
            if value not in options:
                raise ConfigError(f"train.{key} {value!r} is not one of {', '.join(options)}")
        if not 0 < self.lr_decay_fraction <= 1:
            raise ConfigError(f"train.lr_decay_fraction must be in (0, 1], got {self.lr_decay_fraction}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in [0, 1) (0 = no average), got {self.ema_decay}")
        for prefix, scale in self.lr_scale.items():
            if isinstance(scale, Mapping):
                raise ConfigError(
                    f"train.lr_scale.{prefix} holds keys, not a number: on the command line a prefix with dots goes in brackets, "
                    f"e.g. train.lr_scale[{prefix}.0]=2"
                )
            if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
                raise ConfigError(f"train.lr_scale.{prefix} must be a positive number, got {scale}")
        if module is not None:
            _lr_scale_prefixes(module, self.lr_scale)


class Task(Protocol):
    """What a training run trains: the engine prepares `module` and calls the rest."""

    name: str
    module: nn.Module

    def to(self, device: torch.device) -> None: ...

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


def lr_at(step: int, cfg: TrainConfig) -> float:
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
    if cfg.lr_schedule == "wsd":
        decay_steps = max(1, round(cfg.lr_decay_fraction * (cfg.max_steps - cfg.warmup_steps)))
        return cfg.lr * min(1.0, max(0.0, (cfg.max_steps - step) / decay_steps))
    return cfg.lr


def _lr_scale_prefixes(module: nn.Module, lr_scale: dict[str, float]) -> dict[int, str]:
    """id(parameter) -> the longest prefix of its name in `lr_scale` ("" for none); ConfigError for a prefix that names nothing."""
    prefix_of, matched, roots = {}, set(), set()
    for name, p in module.named_parameters():
        if p.requires_grad:
            matches = [prefix for prefix in lr_scale if name == prefix or name.startswith(prefix + ".")]
            prefix_of[id(p)] = max(matches, key=len) if matches else ""
            matched.update(matches)
            roots.add(name.split(".")[0])
    unused = [prefix for prefix in lr_scale if prefix not in matched]
    if unused:
        raise ConfigError(f"train.lr_scale names no trainable parameter: {', '.join(unused)} (the module's parameters start with {', '.join(sorted(roots))})")
    return prefix_of


def _split_by_prefix(groups: list[dict], prefix_of: dict[int, str], lr_scale: dict[str, float]) -> list[dict]:
    """Each group split by matched prefix, its multiplier kept as `lr_scale`.

    Grouping by prefix, not by value, keeps the layout of a run's optimizer state when a resume changes only
    the multipliers. An empty group stays, as it did before lr_scale existed, so older checkpoints still fit.
    """
    split = []
    for group in groups:
        for prefix in sorted({prefix_of[id(p)] for p in group["params"]}) or [""]:
            params = [p for p in group["params"] if prefix_of[id(p)] == prefix]
            split.append({**group, "params": params, "lr_scale": float(lr_scale.get(prefix, 1.0))})
    return split


def param_groups(module: nn.Module, weight_decay: float, muon: bool = False) -> list[dict]:
    """Weight decay on the weights of linear and convolution layers only; not on biases, norms, embeddings, LayerScale.

    With `muon`, the decayed matrices form the first group, flagged for Muon; any other decayed weight
    (a convolution's) follows in an AdamW group of its own.
    """
    decay_ids = {
        id(m.weight)
        for m in module.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and m.weight.requires_grad
    }
    params = [p for p in module.parameters() if p.requires_grad]
    decayed = [p for p in params if id(p) in decay_ids]
    rest = {"params": [p for p in params if id(p) not in decay_ids], "weight_decay": 0.0}
    if not muon:
        return [{"params": decayed, "weight_decay": weight_decay}, rest]
    groups = [{"params": [p for p in decayed if p.ndim == 2], "weight_decay": weight_decay, "muon": True}]
    if any(p.ndim != 2 for p in decayed):
        groups.append({"params": [p for p in decayed if p.ndim != 2], "weight_decay": weight_decay, "muon": False})
    return groups + [{**rest, "muon": False}]


def build_optimizer(module: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The configured optimizer; every group carries `lr_scale`, its share of the scheduled LR."""
    cfg.validate()
    prefix_of = _lr_scale_prefixes(module, cfg.lr_scale)  # also refuses a prefix that names no parameter
    groups = _split_by_prefix(param_groups(module, cfg.weight_decay, muon=cfg.optimizer == "muon"), prefix_of, cfg.lr_scale)
    if cfg.optimizer == "muon":
        return MuonAdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    # The fused kernel updates every parameter in one pass (CPU and CUDA): the same update rule in less time.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        if choice not in ("no", "bf16", "fp16"):
            raise ConfigError(f"train.mixed_precision {choice!r} is not one of auto, no, bf16, fp16")
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


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
    return "" if latest_checkpoint(output_dir / "checkpoints") is not None else run.init_from


def _leaves(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix.rstrip("."): node}
    flat = {}
    for key, value in node.items():
        flat.update(_leaves(value, f"{prefix}{key}."))
    return flat


def _check_same_model(output_dir: Path, run: DictConfig) -> None:
    """Resuming with a different model config, or other lr_scale prefixes, would load mismatched state: name what changed."""
    saved_path = output_dir / RUN_CONFIG
    if not saved_path.is_file():
        return
    saved = OmegaConf.load(saved_path)
    changed = []
    for section in ("backbone", "model"):
        if section in run and section in saved:
            old = _leaves(OmegaConf.to_container(saved[section]), f"{section}.")
            new = _leaves(OmegaConf.to_container(run[section]), f"{section}.")
            changed += [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
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


def weights_digest(module: nn.Module) -> str:
    """sha256 over every parameter and buffer, to compare the replicas held by different processes."""
    digest = hashlib.sha256()
    for name, value in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}


def _flat_hparams(run: DictConfig) -> dict:
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}/")
            else:
                flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk(OmegaConf.to_container(run, resolve=True), "")
    return flat


def launched_on_cpu() -> bool:
    """Whether the launched processes must be joined into a CPU (gloo) group; checks that they all joined.

    Without a GPU, Accelerate only joins processes started by `accelerate launch` when told to use the CPU;
    pass the result as `Accelerator(cpu=...)` / `PartialState(cpu=...)`.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    cpu = not torch.cuda.is_available() and launched > 1
    joined = PartialState(cpu=cpu).num_processes
    if joined != launched:
        raise TrainingError(f"{launched} processes were launched but {joined} joined the process group; check the accelerate launch flags")
    return cpu


def json_safe(metrics: dict[str, float]) -> dict[str, float | None]:
    """JSON has no NaN or inf: an undefined figure (a ratio with nothing to divide) is written as null."""
    return {k: v if math.isfinite(v) else None for k, v in metrics.items()}


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
        mixed_precision=_mixed_precision(cfg.mixed_precision),
        gradient_accumulation_steps=accum,
        log_with=list(cfg.trackers) or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )

    # Every process checks (so each stops on its own, none waits for a failed peer); only the main one deletes.
    prepare_output_dir(output_dir, run.resume, run.overwrite, remove=accelerator.is_main_process)
    accelerator.wait_for_everyone()
    if run.resume:
        _check_same_model(output_dir, run)

    module = task.module
    set_attention_backend(module, cfg.attention_backend)
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
    accelerator.init_trackers(task.name, config=_flat_hparams(run))

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
        final = output_dir / "final"
        tmp = output_dir / ".final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        task.save_final(module, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        atomic_write_text(output_dir / "metrics.json", json.dumps({"step": cfg.max_steps, "skipped_files": skipped_files, "num_processes": world, "ranks_agree": ranks_agree, **json_safe(metrics)}, indent=1))
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
