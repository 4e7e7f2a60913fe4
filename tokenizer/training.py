"""How a batch of clips trains DeltaTok, and how it is validated against copying the previous frame."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.model import Tokenizer


def log_cosh(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise log(cosh(pred - target)), written to stay finite for large differences."""
    diff = (pred.float() - target.float()).abs()
    return diff + F.softplus(-2.0 * diff) - math.log(2.0)


def consecutive_pairs(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, D) -> every (previous, next) pair as two (B * (T-1), N, D) tensors."""
    return features[:, :-1].flatten(0, 1), features[:, 1:].flatten(0, 1)


class TokenizerTask:
    """Train the DeltaTok encoder/decoder on every consecutive frame pair of a clip, the backbone frozen."""

    name = "tokenizer"

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.module: nn.Module = tokenizer.deltatok

    def to(self, device: torch.device) -> None:
        self.tokenizer.to(device)

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        frames = batch["frames"]
        features = self.tokenizer.features(frames)
        prev, nxt = consecutive_pairs(features)
        rope = self.tokenizer.deltatok.rope(self.tokenizer.grid(frames), frames.device, generator)
        return log_cosh(model(prev, nxt, rope), nxt).mean(), {}

    def validate(self, model: nn.Module, batch: dict) -> dict[str, tuple[torch.Tensor, int]]:
        frames = batch["frames"]
        features = self.tokenizer.features(frames)
        prev, nxt = consecutive_pairs(features)
        rope = model.rope(self.tokenizer.grid(frames), frames.device)
        rollout = self.tokenizer.rollout(frames, frames.shape[1] - 1)
        per_pair = lambda pred, target: log_cosh(pred, target).mean(dim=(1, 2))  # noqa: E731
        return {
            "tokenizer_loss": (per_pair(model(prev, nxt, rope), nxt), len(prev)),
            "copy_previous_loss": (per_pair(prev, nxt), len(prev)),
            "tokenizer_rollout_loss": (log_cosh(rollout["preds"], rollout["targets"]).mean(dim=(1, 2, 3)), len(frames)),
        }

    def summary(self, metrics: dict[str, float]) -> str:
        ratio = metrics["copy_previous_loss"] / max(metrics["tokenizer_loss"], 1e-12)
        return (
            f"validation log-cosh feature loss: tokenizer {metrics['tokenizer_loss']:.5f} | "
            f"copy-previous {metrics['copy_previous_loss']:.5f} (tokenizer {ratio:.1f}x lower) | "
            f"tokenizer autoregressive over the clip {metrics['tokenizer_rollout_loss']:.5f}"
        )

    def save_final(self, model: nn.Module, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder)
