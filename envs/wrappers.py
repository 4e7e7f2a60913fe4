"""DeltaTokenObservation: see any pixel env through the tokenizer, one delta token per step."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from tokenizer.data.transforms import resize_frames
from tokenizer.model import Tokenizer
from tokenizer.runtime.errors import InputError


def model_device(model: nn.Module) -> torch.device:
    """Where `model`'s weights are: every tensor made for it is made there, so one model never sees two devices."""
    return next(model.parameters()).device


def frame_tensor(frame: np.ndarray, size: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 1, 3, H, W) uint8 on `device`, optionally resized to a square `size`.

    The resize runs on the CPU before the move: every device gets the same pixels, and moves fewer of them.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
        raise InputError(f"frames must be (H, W, 3) uint8 RGB, got {frame.dtype} {frame.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None]
    if size:
        tensor = resize_frames(tensor, size, size)
    return tensor[None].to(device)


def is_image_space(space: spaces.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3 and space.shape[-1] == 3


class DeltaTokenObservation(gymnasium.ObservationWrapper):
    """Replace the observation with the newest frame's delta token (D,) float32.

    The token encodes the change from the previous frame (from a black frame
    right after reset), exactly as DeltaWorld's history holds it. Frames are the
    observation when it is an (H, W, 3) uint8 image, else `env.render()`
    (make the env with render_mode="rgb_array"). With `features=True` the
    observation is a Dict {"token": (D,), "features": (N, D)}: the frame's patch features.
    """

    def __init__(self, env: gymnasium.Env, tokenizer: Tokenizer, features: bool = False, frame_size: int | None = None):
        """frame_size: resize frames to this square size first (None: keep the env's size)."""
        super().__init__(env)
        self.tokenizer = tokenizer.eval()
        self.include_features = features
        self.frame_size = frame_size
        self._from_observation = is_image_space(env.observation_space)
        if not self._from_observation and env.render_mode != "rgb_array":
            raise InputError(
                "DeltaTokenObservation needs image observations or an env made with render_mode='rgb_array'"
            )
        if frame_size:
            height = width = frame_size
        elif self._from_observation:
            height, width = env.observation_space.shape[:2]
        else:
            raise InputError(
                "this env's observations are not images: pass frame_size, the square size its rendered frames are "
                "resized to"
            )
        rows, cols = tokenizer.backbone.grid(height, width)
        dim = tokenizer.dim
        token_space = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        self.observation_space = (
            spaces.Dict({"token": token_space, "features": spaces.Box(-np.inf, np.inf, (rows * cols, dim), np.float32)})
            if features
            else token_space
        )
        self._prev: torch.Tensor | None = None  # (1, N, D) features of the previous frame

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._prev = None
        return super().reset(seed=seed, options=options)

    @torch.no_grad()
    def observation(self, observation: Any) -> np.ndarray | dict[str, np.ndarray]:
        frame = frame_tensor(
            observation if self._from_observation else self.env.render(), self.frame_size, model_device(self.tokenizer)
        )
        features = self.tokenizer.features(frame)  # (1, 1, N, D)
        token = self.tokenizer.tokenize_features(features, frame.shape[-2:], self._prev)[0, 0]
        self._prev = features[:, 0]
        token = token.float().cpu().numpy()
        if not self.include_features:
            return token
        return {"token": token, "features": features[0, 0].float().cpu().numpy()}
