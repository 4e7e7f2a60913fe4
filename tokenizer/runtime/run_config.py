"""The fields every training run config starts with, and the `train` section the engine reads.

`RunConfig` is the base of each script's run config (tokenizer.run_config, worldmodel.run_config);
`TrainConfig` is its `train` section. `TrainConfig.validate` refuses a choice that is not one of its
options before anything is built or written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import nn

from tokenizer.runtime.errors import ConfigError

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
    effective_batch_size: int | None = None  # clips per optimizer step over all processes; null = no accumulation
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
    threads: int | None = None  # torch CPU threads per process; null = PyTorch's default

    def validate(self, module: nn.Module | None = None) -> None:
        """Raise ConfigError naming the first key whose value cannot work (and, given the trained module,
        the first lr_scale prefix that names none of its parameters)."""
        for key, value, options in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("lr_schedule", self.lr_schedule, LR_SCHEDULES),
        ):
            if value not in options:
                raise ConfigError(f"train.{key} {value!r} is not one of {', '.join(options)}")
        for key, least in (
            ("max_steps", 1),
            ("batch_size", 1),
            ("warmup_steps", 0),
            ("checkpoint_every", 1),
            ("keep_checkpoints", 1),
            ("log_every", 1),
            ("val_every", 0),
            ("num_workers", 0),
        ):
            if getattr(self, key) < least:
                raise ConfigError(f"train.{key} must be at least {least}, got {getattr(self, key)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"train.lr must be a finite number above 0, got {self.lr}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise ConfigError(f"train.grad_clip must be a finite number, at least 0 (0 = off), got {self.grad_clip}")
        if not 0 < self.lr_decay_fraction <= 1:
            raise ConfigError(f"train.lr_decay_fraction must be in (0, 1], got {self.lr_decay_fraction}")
        if self.effective_batch_size is not None and self.effective_batch_size < 1:
            raise ConfigError(
                "train.effective_batch_size must be at least 1, or null for no accumulation, got "
                f"{self.effective_batch_size}"
            )
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay must be in [0, 1) (0 = no average), got {self.ema_decay}")
        for prefix, scale in self.lr_scale.items():
            if isinstance(scale, Mapping):
                raise ConfigError(
                    f"train.lr_scale.{prefix} holds keys, not a number: on the command line a prefix with dots goes "
                    f"in brackets, e.g. train.lr_scale[{prefix}.0]=2"
                )
            if (
                isinstance(scale, bool)
                or not isinstance(scale, (int, float))
                or not (math.isfinite(scale) and scale > 0)
            ):
                raise ConfigError(f"train.lr_scale.{prefix} must be a positive number, got {scale}")
        if module is not None:
            lr_scale_prefixes(module, self.lr_scale)


def lr_scale_prefixes(module: nn.Module, lr_scale: dict[str, float]) -> dict[int, str]:
    """id(parameter) -> the longest prefix of its name in `lr_scale` ("" for none); ConfigError for a prefix that names
    nothing.

    It lives beside the config because it is the meaning of `train.lr_scale`: validation asks it whether every
    prefix names a parameter, and the optimizer (tokenizer.runtime.optim) asks it which group each parameter joins.
    """
    prefix_of, matched, roots = {}, set(), set()
    for name, p in module.named_parameters():
        if p.requires_grad:
            matches = [prefix for prefix in lr_scale if name == prefix or name.startswith(prefix + ".")]
            prefix_of[id(p)] = max(matches, key=len) if matches else ""
            matched.update(matches)
            roots.add(name.split(".")[0])
    unused = [prefix for prefix in lr_scale if prefix not in matched]
    if unused:
        raise ConfigError(
            f"train.lr_scale names no trainable parameter: {', '.join(unused)} (the module's parameters start with "
            f"{', '.join(sorted(roots))})"
        )
    return prefix_of
