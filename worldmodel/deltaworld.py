"""DeltaWorld: a frozen DeltaTok tokenizer and a predictor that imagines the next delta token.

Training: a clip's delta tokens (B, T, D) are the sequence; the token of frame
i is predicted from the tokens of frames before i at their timestamps (and the
action taken just before frame i). Imagining: the history holds the context
tokens; each step predicts one token per sample, decodes it against that
sample's previous features, and appends it, reusing every earlier step's
projected keys and values.
"""

from __future__ import annotations

import torch

from tokenizer.model import Tokenizer
from worldmodel.objectives import build_objective
from worldmodel.predictor import Predictor, causal_mask
from worldmodel.world import Dream, WorldModel, WorldModelConfig


class DeltaWorld(WorldModel):
    @classmethod
    def build(cls, tokenizer: Tokenizer, config: WorldModelConfig) -> "DeltaWorld":
        predictor = Predictor(config.predictor, tokenizer.dim)
        return cls(tokenizer, build_objective(config.objective, predictor, config.actions), config)

    @torch.no_grad()
    def training_inputs(self, frames: torch.Tensor, timestamps: torch.Tensor, actions: torch.Tensor | None) -> dict:
        """Objective inputs for clips (B, T, 3, H, W): tokens 1..T-1, each from the tokens before it."""
        tokens, _ = self.tokenizer.tokenize(frames)
        return self.inputs_from_tokens(tokens, timestamps, actions)

    def inputs_from_tokens(self, tokens: torch.Tensor, timestamps: torch.Tensor, actions: torch.Tensor | None) -> dict:
        """tokens (B, T, D), timestamps (B, T), actions (B, T, A) where actions[:, t] leads into frame t."""
        frame = torch.arange(tokens.shape[1], device=tokens.device)
        return {
            "history": tokens[:, :-1],
            "history_positions": timestamps[:, :-1],
            "targets": tokens[:, 1:, None],
            "target_positions": timestamps[:, 1:, None, None],
            "mask": causal_mask(frame[1:], frame[:-1]),
            "actions": actions[:, 1:] if actions is not None and self.action_conditioned else None,
        }

    @torch.no_grad()
    def start(self, frames, timestamps, num_samples, features=None) -> Dream:
        if features is None:
            features = self.tokenizer.features(frames)
        batch, _, _, height, width = frames.shape
        grid = self.tokenizer.grid(frames)
        black = self.tokenizer.black_features(batch, height, width, frames.device)
        tokens = self.tokenizer.deltatok.tokenize(features, black, self.tokenizer.rope(grid, frames.device))[:, :, 0]
        cache = self.objective.predictor.encode_history(tokens, timestamps).repeat(num_samples)
        return Dream(
            cache=cache,
            features=features[:, -1].repeat_interleave(num_samples, 0),
            time=timestamps[:, -1].repeat_interleave(num_samples, 0),
            grid=grid,
        )

    @torch.no_grad()
    def step(self, dream, time, actions=None, generator=None, noise=None):
        """-> (tokens (R, D), features (R, N, D), next dream)."""
        positions = time[:, None, None].float()
        tokens = self.objective.sample(dream.cache, positions, actions, generator, noise)[:, 0]
        features = self.tokenizer.decode(tokens.to(dream.features.dtype), dream.features, dream.grid)
        cache = dream.cache.append(self.objective.predictor.encode_history(tokens[:, None], time[:, None]))
        return tokens, features, Dream(cache, features, time, dream.grid)
