"""DINOWorld, the paper's patch-level baseline: predict every patch feature of the next frame.

The same predictor and objectives as DeltaWorld, but the history is every patch
of every past frame ((T-1) * N entries) and each imagined frame needs N queries,
with RoPE over (time, x, y). It needs no tokenizer decoder: only the frozen
backbone. Side by side with DeltaWorld it shows what one token per frame saves.
"""

from __future__ import annotations

import torch

from tokenizer.model import Tokenizer
from tokenizer.runtime.errors import ConfigError
from worldmodel.objectives import build_objective
from worldmodel.predictor import Predictor, causal_mask
from worldmodel.world import Dream, WorldModel, WorldModelConfig


def patch_xy(grid: tuple[int, int], device: torch.device) -> torch.Tensor:
    """(N, 2) patch coordinates (x, y) in [-1, 1], row-major."""
    rows, cols = grid
    y, x = torch.meshgrid(
        torch.linspace(-1, 1, rows, device=device), torch.linspace(-1, 1, cols, device=device), indexing="ij"
    )
    return torch.stack((x.flatten(), y.flatten()), dim=-1)


def patch_positions(timestamps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """timestamps (B, T) -> (B, T, N, 3) positions (t, x, y) of every patch."""
    xy = patch_xy(grid, timestamps.device)
    batch, time = timestamps.shape
    t = timestamps[:, :, None, None].float().expand(batch, time, xy.shape[0], 1)
    return torch.cat((t, xy.expand(batch, time, -1, -1)), dim=-1)


class DINOWorld(WorldModel, kind="dinoworld"):
    """The paper's patch-level baseline: the same predictor imagines every patch of the next frame's backbone
    features (R, N, D) from the history of every patch, at positions (time, x, y). Made by `model.kind: dinoworld`
    (`configs/world_model/tiny_dinoworld.yaml`) and loaded like any world model (`load_world_model`)."""

    @classmethod
    def build(cls, tokenizer: Tokenizer, config: WorldModelConfig) -> DINOWorld:
        if len(config.predictor.rope_axis_sizes) != 3:
            raise ConfigError(
                "dinoworld needs three RoPE axes (time, x, y), got "
                f"predictor.rope_axis_sizes={list(config.predictor.rope_axis_sizes)}"
            )
        if config.readout.enabled:
            raise ConfigError(
                "model.readout is for DeltaWorld: a patch-level model's imagined frames are already features"
            )
        predictor = Predictor(config.predictor, tokenizer.dim)
        return cls(tokenizer, build_objective(config.objective, predictor, config.actions), config)

    def token_shape(self, patches: int) -> tuple[int, ...]:
        return (patches, self.tokenizer.dim)

    def frame_tokens(self, features, prev, frame_size):
        return features  # a patch-level model's "token" is the frame's features

    def context_tokens(self, features, frame_size):
        return features

    @torch.no_grad()
    def training_inputs(self, frames: torch.Tensor, timestamps: torch.Tensor, actions: torch.Tensor | None) -> dict:
        """Objective inputs for clips (B, T, 3, H, W): every patch of frames 1..T-1 from all patches before."""
        features = self.tokenizer.features(frames)
        positions = patch_positions(timestamps, self.tokenizer.grid(frames))
        patches = features.shape[2]
        frame = torch.arange(frames.shape[1], device=frames.device).repeat_interleave(patches)
        history_frames, target_frames = frame[:-patches], frame[patches:]
        return {
            "history": features[:, :-1].flatten(1, 2),
            "history_positions": positions[:, :-1].flatten(1, 2),
            "targets": features[:, 1:],
            "target_positions": positions[:, 1:],
            "mask": causal_mask(target_frames, history_frames),
            "actions": actions[:, 1:] if actions is not None and self.action_conditioned else None,
        }

    def encode_tokens(self, tokens, timestamps, grid):
        positions = patch_positions(timestamps, grid)
        return self.objective.predictor.encode_history(tokens.flatten(1, 2), positions.flatten(1, 2))

    @torch.no_grad()
    def imagine(self, dream, time, actions=None, generator=None, noise=None):
        """-> (features (R, N, D): a patch-level model's "tokens" are its features, next dream, already decoded)."""
        positions = patch_positions(time[:, None], dream.grid)[:, 0]
        features = self.objective.sample(dream.cache, positions, actions, generator, noise).to(dream.features.dtype)
        return features, self.observe(dream, time, features)

    @torch.no_grad()
    def observe(self, dream, time, tokens):
        """-> the next dream, already decoded (`tokens` are the frame's features (R, N, D))."""
        positions = patch_positions(time[:, None], dream.grid)[:, 0]
        cache = dream.cache.append(self.objective.predictor.encode_history(tokens, positions))
        return Dream(cache, tokens, time, dream.grid)
