"""DDPM training and DDIM sampling of the next token through diffusers' schedulers.

The same query as flow matching (noised token + timestep embedding); the
predictor's output is the scheduler's `prediction_type` (v by default, steadier
than epsilon at the low-noise end for unit-scale tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler

from tokenizer.runtime.errors import ConfigError
from worldmodel.objectives.flow import NoisedTokenObjective


class Diffusion(NoisedTokenObjective):
    def __init__(self, cfg, predictor, actions):
        if cfg.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ConfigError(
                f"objective.prediction_type {cfg.prediction_type!r} is not one of epsilon, v_prediction, sample"
            )
        super().__init__(cfg, predictor, actions)
        self.train_scheduler = DDPMScheduler(
            num_train_timesteps=cfg.train_timesteps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type=cfg.prediction_type,
            clip_sample=False,
        )

    def _target(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.cfg.prediction_type == "epsilon":
            return noise
        if self.cfg.prediction_type == "sample":
            return clean
        return self.train_scheduler.get_velocity(clean, noise, timesteps)

    def forward(self, history, history_positions, targets, target_positions, mask, actions, generator):
        batch, groups, n, dim = targets.shape
        cache = self.predictor.encode_history(history, history_positions)
        clean = targets.float().flatten(0, 1)  # (B*G, n, D)
        noise = torch.randn(clean.shape, device=clean.device, generator=generator)
        timesteps = torch.randint(
            0, self.cfg.train_timesteps, (batch * groups,), device=clean.device, generator=generator
        )
        noisy = self.train_scheduler.add_noise(clean, noise, timesteps)
        queries = self.condition_groups(self.query(noisy, timesteps).unflatten(0, (batch, groups)), actions).flatten(
            1, 2
        )
        pred = self.predictor.attend(queries, target_positions.flatten(1, 2), cache, mask)
        target = self._target(clean, noise, timesteps).unflatten(0, (batch, groups)).flatten(1, 2)
        return F.mse_loss(pred.float(), target), {}

    def sampling_scheduler(self):
        return DDIMScheduler.from_config(self.train_scheduler.config)
