"""How far imagined frames are from a goal: the reward of DreamEnv and the cost of the planners.

A step cost scores one imagined step of R rows: `cost(world, dream, tokens) -> (R,)`,
lower is better, and says whether it reads decoded features (`needs_features`), so
the caller decodes only for costs that do. Two goal costs:
- `FeatureGoalCost`: the per-patch feature distance to the goal frame; every
  imagined step of every candidate is decoded to all N patches.
- `TokenGoalCost`: the same distance between the readout's summary of the imagined
  frame (`worldmodel.readout`) and the goal's summary; never decodes, so a step
  costs about one predictor call.
Any callable `(tokens (R, ...), features (R, N, D)) -> (R,)` is a feature cost too.

Both compare maps cell by cell, so an imagined object that misses its goal place
costs the same whether it is one cell off or across the frame. `cost_blur`
smooths both maps with a Gaussian of that many backbone patches first, so a
nearer miss costs less and a search has a slope to follow (docs/experiments.md:
"What the cost tells a search").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch

from envs.wrappers import frame_tensor, model_device
from tokenizer.runtime.errors import ConfigError
from worldmodel.feature_maps import spatial_blur
from worldmodel.world import Dream, WorldModel

COST_KINDS = ("auto", "token", "features")


def feature_distance(features: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """Mean over patches of the Euclidean distance between features (..., N, D) and goal (N, D) -> (...).

    Per-patch distances, not one flattened norm, so that a small object moving
    counts as much wherever the rest of the scene sits.
    """
    return (features.float() - goal.float()).norm(dim=-1).mean(dim=-1)


class StepCost(Protocol):
    needs_features: bool

    def __call__(self, world: WorldModel, dream: Dream, tokens: torch.Tensor) -> torch.Tensor: ...


class Blur:
    """`spatial_blur` of maps on one grid with one Gaussian (std in cells); the identity at 0."""

    def __init__(self, grid: tuple[int, int], sigma: tuple[float, float]):
        self.grid, self.sigma = grid, sigma

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return features if max(self.sigma) <= 0 else spatial_blur(features, self.grid, self.sigma)


NO_BLUR = Blur((0, 0), (0.0, 0.0))


class FeatureGoalCost:
    """Feature distance of each imagined frame to a goal frame's features (N, D), or (R, N, D): one per row, both
    smoothed by `blur` (patch grid) first."""

    needs_features = True

    def __init__(self, goal_features: torch.Tensor, blur: Blur = NO_BLUR):
        self.blur = blur
        self.goal = blur(goal_features)

    def __call__(self, world: WorldModel, dream: Dream, tokens: torch.Tensor) -> torch.Tensor:
        return feature_distance(self.blur(dream.features), self.goal)

    def of_features(self, world: WorldModel, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The cost of real frames' features (R, N, D) -> (R,): what a perfect world model's frame would cost."""
        return feature_distance(self.blur(features), self.goal)


class TokenGoalCost:
    """Distance of the readout's summary (R, g*g, D) of each imagined frame to the goal's summary (g*g, D), or
    (R, g*g, D): one per row, both smoothed by `blur` (summary grid) first."""

    needs_features = False

    def __init__(self, goal_summary: torch.Tensor, blur: Blur = NO_BLUR):
        self.blur = blur
        self.goal = blur(goal_summary)

    def __call__(self, world: WorldModel, dream: Dream, tokens: torch.Tensor) -> torch.Tensor:
        return feature_distance(self.blur(world.summary(dream)), self.goal)

    def of_features(self, world: WorldModel, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The cost of real frames' features (R, N, D) -> (R,): their summaries, which the readout learns to give."""
        return feature_distance(self.blur(world.readout.summarize(features, grid)), self.goal)


class FeatureFunctionCost:
    """A plain `(tokens, features) -> (R,)` callable as a step cost."""

    needs_features = True

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.fn = fn

    def __call__(self, world: WorldModel, dream: Dream, tokens: torch.Tensor) -> torch.Tensor:
        return self.fn(tokens, dream.features)


def check_cost_kind(kind: str) -> str:
    if kind not in COST_KINDS:
        raise ConfigError(f"cost {kind!r} is not one of {', '.join(COST_KINDS)}")
    return kind


def check_cost_blur(blur: float, key: str = "cost_blur") -> float:
    if not (math.isfinite(blur) and blur >= 0):
        raise ConfigError(f"{key} is a Gaussian's std in backbone patches, 0 or more, got {blur}")
    return blur


def as_step_cost(cost: StepCost | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> StepCost:
    return cost if hasattr(cost, "needs_features") else FeatureFunctionCost(cost)


@torch.no_grad()
def goal_cost(world: WorldModel, goal_frame: np.ndarray, kind: str = "auto", blur: float = 0.0) -> StepCost:
    """The cost of reaching `goal_frame` (H, W, 3) uint8: "token" (the readout's summaries, no decoding),
    "features" (decodes every step), or "auto": token when the model has a readout; maps smoothed by a Gaussian of
    std `blur` backbone patches (0: compared as they are)."""
    frames = frame_tensor(np.asarray(goal_frame), device=model_device(world))
    return goal_cost_of_features(
        world, world.tokenizer.features(frames)[0, 0], world.tokenizer.grid(frames), kind, blur
    )


@torch.no_grad()
def goal_cost_of_features(
    world: WorldModel, features: torch.Tensor, grid: tuple[int, int], kind: str, blur: float = 0.0
) -> StepCost:
    """`goal_cost` from the goal frame's backbone features (N, D) on a patch `grid`, or (R, N, D): one goal per
    imagined row (rows planning toward different goals in one batch)."""
    check_cost_blur(blur)
    if check_cost_kind(kind) == "auto":
        kind = "token" if world.readout is not None else "features"
    if kind == "features":
        return FeatureGoalCost(features, Blur(grid, (blur, blur)))
    if world.readout is None:
        raise ConfigError(
            "the token cost reads the world model's readout, and this model has none (train one with "
            "model.readout.enabled=true)"
        )
    # The summary's cells pool grid / cells patches each way: the same Gaussian, in cells.
    cells = world.readout.cfg.grid
    return TokenGoalCost(
        world.readout.summarize(features, grid), Blur((cells, cells), (blur * cells / grid[0], blur * cells / grid[1]))
    )
