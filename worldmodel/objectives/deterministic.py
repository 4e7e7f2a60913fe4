"""The discriminative baseline: one learned query, plain regression to the next token."""

from __future__ import annotations

import torch
from torch import nn

from worldmodel.objectives.base import Objective, regression_loss


class Deterministic(Objective):
    def __init__(self, cfg, predictor, actions):
        super().__init__(cfg, predictor, actions)
        # Key name as in the released checkpoints of the non-generative model.
        self.q_embed = nn.Embedding(1, self.width)
        nn.init.trunc_normal_(self.q_embed.weight, std=predictor.cfg.initializer_range)

    def _queries(self, shape: tuple[int, ...]) -> torch.Tensor:
        return self.q_embed.weight.view(*([1] * len(shape)), -1).expand(*shape, -1)

    def forward(self, history, history_positions, targets, target_positions, mask, actions, generator):
        batch, groups, n, _ = targets.shape
        cache = self.predictor.encode_history(history, history_positions)
        queries = self.condition_groups(self._queries((batch, groups, n)), actions)
        preds = self.predictor.attend(queries.flatten(1, 2), target_positions.flatten(1, 2), cache, mask)
        loss = regression_loss(preds, targets.flatten(1, 2), self.cfg.loss, self.cfg.loss_beta).mean()
        return loss, {}

    def sample(self, cache, positions, actions, generator, noise=None):
        rows, n = positions.shape[:2]
        return self.predictor.attend(self.condition(self._queries((rows, n)), actions), positions, cache)
