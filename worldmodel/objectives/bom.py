"""Best-of-many: sample S noise queries per target, train only the one whose prediction is best.

The selection pass runs without autograd, in chunks of hypotheses so memory
stays bounded at S = 256, and reuses the history's projected keys/values that
the trained pass needs anyway. Imagining draws a fresh noise query per sample:
the spread of the K predictions is the model's uncertainty.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from worldmodel.objectives.base import Objective, regression_loss


class BestOfMany(Objective):
    def _noise(self, shape: tuple[int, ...], like: torch.Tensor, generator) -> torch.Tensor:
        return torch.randn(*shape, self.width, device=like.device, generator=generator) * self.cfg.query_std

    @torch.no_grad()
    def _select(
        self, cache, targets, target_positions, mask_frames, actions, hypotheses: Iterable[torch.Tensor]
    ) -> torch.Tensor:
        """Best noise query per group, (B, G, W), by the mean loss over its n tokens.

        `hypotheses` yields chunks of noise queries (B, G, s, W); only one chunk is alive at a time.
        """
        batch, groups, n, _ = targets.shape
        best_loss = torch.full((batch, groups), float("inf"), device=targets.device)
        best = torch.zeros(batch, groups, self.width, device=targets.device)
        for noise in hypotheses:
            chunk = noise.shape[2]
            queries = self.condition_groups(noise, actions)  # (B, G, s, W)
            queries = queries.unsqueeze(3).expand(-1, -1, -1, n, -1).flatten(1, 3)
            positions = target_positions.unsqueeze(2).expand(-1, -1, chunk, -1, -1).flatten(1, 3)
            mask = mask_frames.repeat_interleave(chunk * n, dim=0) if mask_frames is not None else None
            preds = self.predictor.attend(queries, positions, cache, mask).unflatten(1, (groups, chunk, n))
            losses = regression_loss(preds, targets.unsqueeze(2), self.cfg.loss, self.cfg.loss_beta).mean(dim=(-2, -1))
            chunk_loss, chunk_index = losses.min(dim=2)
            better = chunk_loss < best_loss
            best_loss = torch.where(better, chunk_loss, best_loss)
            picked = torch.gather(noise, 2, chunk_index[:, :, None, None].expand(-1, -1, 1, self.width))[:, :, 0]
            best = torch.where(better[..., None], picked, best)
        return best

    def forward(self, history, history_positions, targets, target_positions, mask, actions, generator):
        batch, groups = targets.shape[:2]
        sizes = [
            min(self.cfg.selection_chunk, self.cfg.num_hypotheses - start)
            for start in range(0, self.cfg.num_hypotheses, self.cfg.selection_chunk)
        ]
        hypotheses = (self._noise((batch, groups, size), targets, generator) for size in sizes)
        loss, _ = self.loss_with_hypotheses(
            history, history_positions, targets, target_positions, mask, actions, hypotheses
        )
        return loss, {}

    def loss_with_hypotheses(self, history, history_positions, targets, target_positions, mask, actions, hypotheses):
        """The training step for given noise-query chunks (B, G, s, W); returns (loss, predictions (B, G*n, D))."""
        n = targets.shape[2]
        cache = self.predictor.encode_history(history, history_positions)
        # One mask row per group: every token of a group sees the same history.
        mask_frames = mask[::n] if mask is not None else None
        chosen = self._select(cache, targets, target_positions, mask_frames, actions, hypotheses)
        queries = self.condition_groups(chosen, actions).unsqueeze(2).expand(-1, -1, n, -1).flatten(1, 2)
        preds = self.predictor.attend(queries, target_positions.flatten(1, 2), cache, mask)
        loss = regression_loss(preds, targets.flatten(1, 2), self.cfg.loss, self.cfg.loss_beta).mean()
        return loss, preds

    def sample(self, cache, positions, actions, generator, noise=None):
        rows, n = positions.shape[:2]
        queries = noise if noise is not None else self._noise((rows, 1), positions, generator)
        queries = self.condition(queries.reshape(rows, 1, self.width), actions).expand(-1, n, -1)
        return self.predictor.attend(queries, positions, cache)
