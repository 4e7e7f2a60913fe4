"""Flow matching on the next token: the query carries the noised token and the flow time.

x_sigma = sigma * noise + (1 - sigma) * token, sigma ~ U(0, 1); the predictor
regresses the velocity d x / d sigma = noise - token (diffusers' convention), and
imagining integrates it from pure noise with `FlowMatchEulerDiscreteScheduler`,
all K samples in one batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from worldmodel.objectives.base import Objective

TIME_CHANNELS = 256


class NoisyTokenQuery(nn.Module):
    """A noised token (..., D) and its noise level (R,) in scheduler timesteps -> query (..., W)."""

    def __init__(self, token_dim: int, width: int):
        super().__init__()
        self.sample_in = nn.Linear(token_dim, width)
        self.time_proj = Timesteps(TIME_CHANNELS, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(TIME_CHANNELS, width)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        time = self.time_embed(self.time_proj(timesteps.flatten()).to(noisy.dtype))
        return self.sample_in(noisy) + time.view(time.shape[0], *([1] * (noisy.ndim - 2)), time.shape[-1])


class NoisedTokenObjective(Objective):
    """An objective whose query is a noised token: imagining runs a diffusers scheduler from pure noise."""

    def __init__(self, cfg, predictor, actions):
        super().__init__(cfg, predictor, actions)
        self.query = NoisyTokenQuery(predictor.head.out_features, self.width)

    def sampling_scheduler(self):
        raise NotImplementedError

    def sample(self, cache, positions, actions, generator, noise=None):
        rows, n = positions.shape[:2]
        dim = self.predictor.head.out_features
        x = noise if noise is not None else torch.randn(rows, n, dim, device=positions.device, generator=generator)
        scheduler = self.sampling_scheduler()
        scheduler.set_timesteps(self.cfg.sampling_steps, device=positions.device)
        for t in scheduler.timesteps:
            queries = self.condition(self.query(x, t.expand(rows)), actions)
            x = scheduler.step(self.predictor.attend(queries, positions, cache).float(), t, x.float()).prev_sample
        return x


class FlowMatching(NoisedTokenObjective):
    def forward(self, history, history_positions, targets, target_positions, mask, actions, generator):
        batch, groups, n, dim = targets.shape
        cache = self.predictor.encode_history(history, history_positions)
        targets = targets.float()
        noise = torch.randn(targets.shape, device=targets.device, generator=generator)
        sigma = torch.rand(batch, groups, device=targets.device, generator=generator)
        noisy = sigma[..., None, None] * noise + (1 - sigma[..., None, None]) * targets
        queries = self.query(noisy.flatten(0, 1), sigma.flatten() * self.cfg.train_timesteps).unflatten(
            0, (batch, groups)
        )
        queries = self.condition_groups(queries, actions).flatten(1, 2)
        velocity = self.predictor.attend(queries, target_positions.flatten(1, 2), cache, mask)
        loss = F.mse_loss(velocity.float(), (noise - targets).flatten(1, 2))
        return loss, {}

    def sampling_scheduler(self):
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=self.cfg.train_timesteps)
