"""DeltaWorld: a frozen DeltaTok tokenizer and a predictor that imagines the next delta token.

Training: a clip's delta tokens (B, T, D) are the sequence; the token of frame
i is predicted from the tokens of frames before i at their timestamps (and the
action taken just before frame i). Imagining: the history holds the context
tokens; each step predicts one token per sample, decodes it against that
sample's previous features, and appends it, reusing every earlier step's
projected keys and values. Decoding waits until features are asked for
(`decoded`), so a cost that reads the readout never decodes at all.
"""

from __future__ import annotations

import torch

from tokenizer.model import Tokenizer
from worldmodel.objectives import build_objective
from worldmodel.predictor import Predictor, causal_mask
from worldmodel.readout import Readout
from worldmodel.world import Dream, WorldModel, WorldModelConfig


class DeltaWorld(WorldModel, kind="deltaworld"):
    """A frozen DeltaTok tokenizer and a predictor over its delta tokens: a history of tokens (B, T, D) -> the next
    frame's token (B, D), sampled (best-of-many, flow matching, ...) so K futures are imagined at once. Get one with
    `load_world_model(id_or_folder)` (the released `Amazon-FAR/deltaworld-kinetics`, a `train_world_model.py` run)."""

    trains_on_tokens = True

    @classmethod
    def build(cls, tokenizer: Tokenizer, config: WorldModelConfig) -> DeltaWorld:
        predictor = Predictor(config.predictor, tokenizer.dim)
        readout = Readout(config.readout, tokenizer.dim) if config.readout.enabled else None
        return cls(tokenizer, build_objective(config.objective, predictor, config.actions), config, readout)

    def token_shape(self, patches: int) -> tuple[int, ...]:
        return (self.tokenizer.dim,)

    def frame_tokens(self, features, prev, frame_size):
        return self.tokenizer.tokenize_features(features[:, None], frame_size, prev)[:, 0]

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

    def context_tokens(self, features, frame_size):
        return self.tokenizer.tokenize_features(features, frame_size)

    def encode_tokens(self, tokens, timestamps, grid):
        return self.objective.predictor.encode_history(tokens, timestamps)

    @torch.no_grad()
    def imagine(self, dream, time, actions=None, generator=None, noise=None):
        """-> (tokens (R, D), next dream with the token pending decode)."""
        positions = time[:, None, None].float()
        tokens = self.objective.sample(dream.cache, positions, actions, generator, noise)[:, 0]
        return tokens, self.observe(dream, time, tokens)

    @torch.no_grad()
    def observe(self, dream, time, tokens):
        """-> the next dream with the token pending decode."""
        cache = dream.cache.append(self.objective.predictor.encode_history(tokens[:, None], time[:, None]))
        readout = self.readout.append(dream.readout, tokens, time) if dream.readout is not None else None
        return Dream(cache, dream.features, time, dream.grid, (*dream.pending, tokens), readout)

    @torch.no_grad()
    def decoded(self, dream):
        features = dream.features
        for tokens in dream.pending:
            features = self.tokenizer.decode(tokens.to(features.dtype), features, dream.grid)
        return Dream(dream.cache, features, dream.time, dream.grid, (), dream.readout)
