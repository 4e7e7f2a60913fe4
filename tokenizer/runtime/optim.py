"""What the optimizer steps with: parameter groups, AdamW or Muon, and the learning rate at each step.

Weight decay goes to the weights of linear and convolution layers only. `train.optimizer=muon` hands the
decayed matrices to Muon (tokenizer.runtime.muon) and keeps AdamW for the rest. Every group carries
`lr_scale`, its share of the scheduled LR (`train.lr_scale`): `apply_lr` sets each group's LR from it
before every optimizer step, so the schedule itself is one number per step (`lr_at`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tokenizer.runtime.muon import MuonAdamW
from tokenizer.runtime.run_config import TrainConfig, lr_scale_prefixes


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The scheduled LR before optimizer step `step` (0-based): warmup, then constant, cosine or wsd."""
    if cfg.warmup_steps > 0 and step < cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - cfg.warmup_steps) / span)))
    if cfg.lr_schedule == "wsd":
        decay_steps = max(1, round(cfg.lr_decay_fraction * (cfg.max_steps - cfg.warmup_steps)))
        return cfg.lr * min(1.0, max(0.0, (cfg.max_steps - step) / decay_steps))
    return cfg.lr


def apply_lr(optimizer: torch.optim.Optimizer, step: int, cfg: TrainConfig) -> float:
    """Set every group's LR for optimizer step `step` (the schedule's times the group's `lr_scale`); returns the
    schedule's."""
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    return lr


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
    prefix_of = lr_scale_prefixes(module, cfg.lr_scale)  # also refuses a prefix that names no parameter
    groups = _split_by_prefix(
        param_groups(module, cfg.weight_decay, muon=cfg.optimizer == "muon"), prefix_of, cfg.lr_scale
    )
    if cfg.optimizer == "muon":
        return MuonAdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    # The fused kernel updates every parameter in one pass (CPU and CUDA): the same update rule in less time.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)
