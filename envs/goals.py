"""How far imagined frames are from a goal: the reward of DreamEnv and the cost of the planners."""

from __future__ import annotations

import torch


def feature_distance(features: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """Mean over patches of the Euclidean distance between features (..., N, D) and goal (N, D) -> (...).

    Per-patch distances, not one flattened norm, so that a small object moving
    counts as much wherever the rest of the scene sits.
    """
    return (features.float() - goal.float()).norm(dim=-1).mean(dim=-1)


def token_distance(tokens: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """Euclidean distance between tokens (..., D) and a goal token (D,) -> (...): a cost that needs no decoding."""
    return (tokens.float() - goal.float()).norm(dim=-1)
