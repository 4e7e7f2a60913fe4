"""What every objective shares: the predictor, action conditioning, and the training-time layout.

Targets come in groups: G frames of n tokens each, (B, G, n, D). DeltaWorld has
one delta token per frame (n = 1); the patch-level DINOWorld has n = N patches.
A query for group g may attend only to history entries of earlier frames, and
the action taken just before frame g is added to its queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.runtime.errors import ConfigError, InputError
from worldmodel.predictor import HistoryCache, Predictor


@dataclass
class ObjectiveConfig:
    """How the predictor is trained and sampled (worldmodel.objectives); each option names the kinds it applies to."""

    kind: str = "bom"  # bom | flow | diffusion | deterministic
    loss: str = "smooth_l1"  # bom / deterministic regression loss: smooth_l1 | mse
    loss_beta: float = 0.1  # SmoothL1 beta (the paper's 0.1)
    num_hypotheses: int = 256  # bom: noise queries per target in training
    selection_chunk: int = 64  # bom: hypotheses per no-grad selection pass (bounds memory)
    query_std: float = 0.02  # bom: scale of the N(0, 1) noise queries
    sampling_steps: int = 20  # flow / diffusion: denoising steps when imagining
    train_timesteps: int = 1000  # diffusion: DDPM noise levels; flow: the timestep scale sigma is embedded at
    prediction_type: str = "v_prediction"  # diffusion: epsilon | v_prediction | sample


@dataclass
class ActionSpace:
    """Action conditioning: `dim` continuous (Box) dimensions, or `num_actions` discrete choices; both 0 = none."""

    dim: int = 0  # size of a continuous (Box) action
    num_actions: int = 0  # choices of a discrete action, stored as its index


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str, beta: float) -> torch.Tensor:
    """Elementwise loss in fp32 (no reduction); `target` broadcasts to `pred`."""
    pred, target = pred.float(), target.float().expand_as(pred)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=beta, reduction="none")
    if kind == "mse":
        return F.mse_loss(pred, target, reduction="none")
    raise ConfigError(f"objective.loss {kind!r} is not one of smooth_l1, mse")


class ActionEncoder(nn.Module):
    """Actions -> query offsets (..., W): a linear map for Box actions, a table for discrete ones."""

    def __init__(self, space: ActionSpace, width: int):
        super().__init__()
        if space.dim and space.num_actions:
            raise ConfigError("actions are either continuous (actions.dim) or discrete (actions.num_actions), not both")
        self.space = space
        self.embed = nn.Linear(space.dim, width) if space.dim else nn.Embedding(space.num_actions, width)
        nn.init.zeros_(self.embed.weight)  # start as the unconditioned model
        if isinstance(self.embed, nn.Linear):
            nn.init.zeros_(self.embed.bias)

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        if self.space.dim:
            if actions.shape[-1] != self.space.dim:
                raise InputError(f"actions have {actions.shape[-1]} dimensions, the model expects {self.space.dim}")
            return self.embed(actions.to(self.embed.weight.dtype))
        actions = actions.long()
        if actions.ndim and actions.shape[-1] == 1:
            actions = actions[..., 0]
        if actions.numel() and (actions.min() < 0 or actions.max() >= self.space.num_actions):
            raise InputError(
                f"discrete actions must lie in [0, {self.space.num_actions}), got "
                f"{actions.min().item()}..{actions.max().item()}"
            )
        return self.embed(actions)


class Objective(nn.Module):
    """Base: subclasses build queries (training and sampling) and the loss."""

    def __init__(self, cfg: ObjectiveConfig, predictor: Predictor, actions: ActionSpace):
        super().__init__()
        self.cfg = cfg
        self.predictor = predictor
        self.action_encoder = (
            ActionEncoder(actions, predictor.cfg.hidden_size) if (actions.dim or actions.num_actions) else None
        )

    @property
    def width(self) -> int:
        return self.predictor.cfg.hidden_size

    def condition(self, queries: torch.Tensor, actions: torch.Tensor | None) -> torch.Tensor:
        """Add the action embedding: queries (R, ..., W), actions (R, A) or (R,) -> (R, ..., W)."""
        if self.action_encoder is None:
            return queries
        if actions is None:
            raise InputError("this world model is action-conditioned: pass the actions")
        offset = self.action_encoder(actions)
        return queries + offset.view(offset.shape[0], *([1] * (queries.ndim - 2)), offset.shape[-1])

    def condition_groups(self, queries: torch.Tensor, actions: torch.Tensor | None) -> torch.Tensor:
        """queries (B, G, ..., W) with per-group actions (B, G, A) -> (B, G, ..., W)."""
        if self.action_encoder is None:
            return queries
        if actions is None:
            raise InputError("this world model is action-conditioned: pass the actions")
        batch, groups = queries.shape[:2]
        flat = self.condition(queries.flatten(0, 1), actions.flatten(0, 1) if actions.ndim > 2 else actions.flatten())
        return flat.unflatten(0, (batch, groups))

    def forward(
        self,
        history: torch.Tensor,
        history_positions: torch.Tensor,
        targets: torch.Tensor,
        target_positions: torch.Tensor,
        mask: torch.Tensor,
        actions: torch.Tensor | None,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss. history (B, L, D) at (B, L, axes); targets (B, G, n, D) at (B, G, n, axes);
        mask (G*n, L) True where a target query may look; actions (B, G, A) or None."""
        raise NotImplementedError

    def sample(
        self,
        cache: HistoryCache,
        positions: torch.Tensor,
        actions: torch.Tensor | None,
        generator: torch.Generator | None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One imagined frame per row: cache of R rows, positions (R, n, axes), actions (R, A) -> (R, n, D).

        `noise` replaces the objective's own random draw (its starting noise), to replay another run exactly.
        """
        raise NotImplementedError
