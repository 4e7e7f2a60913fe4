"""How a batch of clips trains a world model, and how it is validated against copying the last frame.

Validation imagines the last `horizon` frames of each validation clip from the
`context` frames before them, K samples each, and reports the feature loss of
the best sample (chosen by its loss at the last step, as the paper does), of the
mean of the K samples, and of copying the last context frame. An action-conditioned model is also rolled out
with each clip given the next clip's actions: `action_usage` = (its mean-of-K loss - the own actions') /
(copy-last's - the own actions'), the share of the model's gain over copying that depends on the actions taken,
as token usage is the tokenizer's. Mean of K, not best of K: a best-of-K loss is as low when a hypothesis
covers an action's effect without reading the action (docs/experiments.md: "What the planner's world model needs").
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from tokenizer.attention import set_attention_backend
from tokenizer.runtime.errors import ConfigError
from tokenizer.usage import token_usage
from worldmodel.objectives import regression_loss
from worldmodel.readout import ObjectiveWithReadout
from worldmodel.world import WorldModel

FEATURE_LOSS = ("smooth_l1", 0.1)  # the paper's criterion, also used to pick the best of K


def feature_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SmoothL1 (beta 0.1) over the last two dims (N, D): (..., N, D) -> (...)."""
    return regression_loss(pred, target, *FEATURE_LOSS).mean(dim=(-2, -1))


def rollout_losses(features: torch.Tensor, targets: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-clip losses of imagined features (B, K, h, N, D) against targets (B, h, N, D).

    Returns world_best, world_mean and copy_last, each (B,), averaged over the horizon steps.
    """
    per_sample = feature_loss(features, targets.unsqueeze(1))  # (B, K, h)
    best = per_sample[:, :, -1].argmin(dim=1)
    copy_last = context[:, -1:].expand_as(targets)
    return {
        "world_best_loss": per_sample[torch.arange(len(best)), best].mean(dim=1),
        "world_mean_loss": feature_loss(features.mean(dim=1), targets).mean(dim=1),
        "copy_last_loss": feature_loss(copy_last, targets).mean(dim=1),
    }


class WorldModelTask:
    """Train the predictor (and its objective's own layers, and the readout if any) on delta tokens of clips; tokenizer
    frozen."""

    name = "world_model"

    def __init__(self, world: WorldModel, context: int, horizons: list[int], num_samples: int, seed: int):
        """Validation rolls `context` real frames out to max(horizons) imagined ones and scores those at `horizons`."""
        self.world = world
        self.module: nn.Module = (
            world.objective if world.readout is None else ObjectiveWithReadout(world.objective, world.readout)
        )
        self.context, self.horizons, self.num_samples, self.seed = context, sorted(set(horizons)), num_samples, seed

    def to(self, device: torch.device) -> None:
        self.world.to(device)

    def use_attention_backend(self, backend: str) -> None:
        set_attention_backend(self.module, backend)

    def _actions(self, batch: dict) -> torch.Tensor | None:
        return batch.get("actions") if self.world.action_conditioned else None

    def loss(self, model: nn.Module, batch: dict, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        readout = self.world.readout
        if "tokens" in batch:  # clips from a token cache (worldmodel.token_cache): the tokenizer already ran
            tokens, summaries = batch["tokens"], batch.get("summaries")
            if readout is not None and summaries is None:
                raise ConfigError(
                    "the readout trains on frame summaries, and this token cache has none: rebuild it with this config"
                )
            inputs = self.world.inputs_from_tokens(tokens, batch["timestamps"], self._actions(batch))
        elif readout is not None:
            with torch.no_grad():
                tokens, features = self.world.tokenizer.tokenize(batch["frames"])
                summaries = readout.summarize(features, self.world.tokenizer.grid(batch["frames"]))
            inputs = self.world.inputs_from_tokens(tokens, batch["timestamps"], self._actions(batch))
        else:
            inputs = self.world.training_inputs(batch["frames"], batch["timestamps"], self._actions(batch))
        if readout is not None:
            inputs["readout_inputs"] = {"tokens": tokens, "summaries": summaries, "timestamps": batch["timestamps"]}
        return model(**inputs, generator=generator)

    def _rollout(self, batch: dict, actions: torch.Tensor | None) -> dict:
        """Validation's rollout of a batch, its sampling noise seeded the same whatever the actions."""
        generator = torch.Generator(batch["frames"].device).manual_seed(self.seed)
        return self.world.rollout(
            batch["frames"], batch["timestamps"], self.context, self.horizons[-1], self.num_samples, actions, generator
        )

    def val_figures(self, model: nn.Module, batch: dict) -> dict[str, tuple[torch.Tensor, int]]:
        frames, actions = batch["frames"], self._actions(batch)
        out = self._rollout(batch, actions)
        scored = [horizon - 1 for horizon in self.horizons]
        losses = rollout_losses(out["features"][:, :, scored], out["targets"][:, scored], out["context"])
        figures = {name: (value, len(frames)) for name, value in losses.items()}
        if actions is not None and len(frames) > 1:  # a lone clip has no other clip's actions to take
            other = self._rollout(batch, actions.roll(1, dims=0))
            shuffled = rollout_losses(other["features"][:, :, scored], out["targets"][:, scored], out["context"])
            figures["shuffled_actions_mean_loss"] = (shuffled["world_mean_loss"], len(frames))
        return figures

    def derived(self, metrics: dict[str, float]) -> dict[str, float]:
        if "shuffled_actions_mean_loss" not in metrics:
            return {}
        own, shuffled = metrics["world_mean_loss"], metrics["shuffled_actions_mean_loss"]
        return {"action_usage": token_usage(own, shuffled, metrics["copy_last_loss"])}

    def summary(self, metrics: dict[str, float]) -> str:
        gap = metrics["copy_last_loss"] / max(metrics["world_best_loss"], 1e-12)
        return (
            f"validation SmoothL1 feature loss (context {self.context}, horizons {self.horizons}, "
            f"K={self.num_samples}): "
            f"world best-of-K {metrics['world_best_loss']:.5f} | world mean-of-K {metrics['world_mean_loss']:.5f} | "
            f"copy-last {metrics['copy_last_loss']:.5f} (best-of-K {gap:.2f}x lower than copy-last)"
        ) + (
            f"\naction usage {metrics['action_usage']:.2f} (mean-of-K with another clip's actions "
            f"{metrics['shuffled_actions_mean_loss']:.5f})"
            if "action_usage" in metrics
            else ""
        )

    def save_final(self, model: nn.Module, folder: Path) -> None:
        self.world.save_pretrained(folder)
