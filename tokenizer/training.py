"""How a batch of clips trains DeltaTok, and how it is validated against copying the previous frame."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from tokenizer.attention import set_attention_backend
from tokenizer.data.sampling import UNBOUNDED_CLIPS
from tokenizer.deltatok import log_cosh
from tokenizer.model import Tokenizer
from tokenizer.runtime.errors import ConfigError
from tokenizer.usage import token_usage, usage_lines, usage_losses


def consecutive_pairs(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, N, D) -> every (previous, next) pair as two (B * (T-1), N, D) tensors."""
    return features[:, :-1].flatten(0, 1), features[:, 1:].flatten(0, 1)


class FeaturePool(Dataset):
    """The backbone features of the first `size` clips of a training set, computed once and then served in turn.

    With a frozen backbone, a small run spends a third of its step making and encoding fresh frames;
    a pool spends that once, and each step then costs the encoder and decoder alone. Clip i of the
    run is pooled clip i % size: {"features": (T, N, D)}; `grid` is the frames' patch grid.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        clips: Dataset,
        size: int,
        batch_size: int,
        device: torch.device,
        clips_drawn: int | None = None,
    ):
        """clips_drawn: how many clips the run draws in all. A pool larger than that would encode clips no
        step serves, so it is cut to it; training is the same, since clip i < clips_drawn is pooled clip i."""
        if size < 1 or size > len(clips):
            raise ConfigError(f"feature_pool must be between 1 and the training set's {len(clips)} clips, got {size}")
        if clips_drawn is not None and size > clips_drawn:
            print(
                f"feature_pool={size} is more than the {clips_drawn} clips this run draws: pooling {clips_drawn}",
                flush=True,
            )
            size = clips_drawn
        features = []
        loader = DataLoader(Subset(clips, range(size)), batch_size=batch_size)
        with torch.no_grad():
            for batch in tqdm(loader, desc=f"encoding a pool of {size} clips", leave=False, dynamic_ncols=True):
                frames = batch["frames"].to(device)
                self.grid = tokenizer.grid(frames)
                features.append(tokenizer.features(frames).float().cpu())
        self.features = torch.cat(features)

    def __len__(self) -> int:
        return UNBOUNDED_CLIPS

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"features": self.features[index % len(self.features)]}


class TokenizerTask:
    """Train the DeltaTok encoder/decoder on every consecutive frame pair of a clip, the backbone frozen."""

    name = "tokenizer"

    def __init__(self, tokenizer: Tokenizer, feature_grid: tuple[int, int] | None = None):
        """feature_grid: the patch grid of batches that carry features instead of frames (a FeaturePool's)."""
        self.tokenizer = tokenizer
        self.feature_grid = feature_grid
        self.module: nn.Module = tokenizer.deltatok

    def to(self, device: torch.device) -> None:
        self.tokenizer.to(device)

    def use_attention_backend(self, backend: str) -> None:
        set_attention_backend(self.module, backend)

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        if "features" in batch:  # from a FeaturePool
            features, grid = batch["features"], self.feature_grid
        else:
            features, grid = self.tokenizer.features(batch["frames"]), self.tokenizer.grid(batch["frames"])
        prev, nxt = consecutive_pairs(features)
        rope = self.tokenizer.deltatok.rope(grid, features.device, generator)
        return log_cosh(model(prev, nxt, rope), nxt).mean(), {}

    def val_figures(self, model: nn.Module, batch: dict) -> dict[str, tuple[torch.Tensor, int]]:
        frames = batch["frames"]
        features = self.tokenizer.features(frames)
        prev, nxt = consecutive_pairs(features)
        rope = model.rope(self.tokenizer.grid(frames), frames.device)
        rollout = self.tokenizer.rollout(frames, frames.shape[1] - 1)
        losses = usage_losses(model, prev, nxt, rope, pairs_per_clip=frames.shape[1] - 1)
        return {
            "tokenizer_loss": (losses["own"], len(prev)),
            "shuffled_token_loss": (losses["shuffled"], len(prev)),
            "copy_previous_loss": (losses["copy"], len(prev)),
            "tokenizer_rollout_loss": (log_cosh(rollout["preds"], rollout["targets"]).mean(dim=(1, 2, 3)), len(frames)),
        }

    def derived(self, metrics: dict[str, float]) -> dict[str, float]:
        return {
            "token_usage": token_usage(
                metrics["tokenizer_loss"], metrics["shuffled_token_loss"], metrics["copy_previous_loss"]
            )
        }

    def summary(self, metrics: dict[str, float]) -> str:
        ratio = metrics["copy_previous_loss"] / max(metrics["tokenizer_loss"], 1e-12)
        lines = [
            f"validation log-cosh feature loss: tokenizer {metrics['tokenizer_loss']:.5f} | "
            f"copy-previous {metrics['copy_previous_loss']:.5f} (tokenizer {ratio:.2f}x lower) | "
            f"tokenizer autoregressive over the clip {metrics['tokenizer_rollout_loss']:.5f}",
            *usage_lines(metrics["tokenizer_loss"], metrics["shuffled_token_loss"], metrics["copy_previous_loss"]),
        ]
        return "\n".join(lines)

    def save_final(self, model: nn.Module, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder)
