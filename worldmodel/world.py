"""What DeltaWorld and the patch-level DINOWorld share: config, imagination loop, files.

A world model is a frozen tokenizer (DINOWorld uses only its backbone) plus a
trainable objective around a predictor, and optionally a readout (a small model
that summarises imagined frames from their tokens, for costs that must not decode).
Subclasses say how a clip becomes training inputs and how one imagined step is made;
the rollout, saving and loading are common. Imagination rows are batch-major: row
b * K + k is sample k of clip b.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tokenizer.model import Tokenizer
from tokenizer.runtime.config import read_saved_config, save_config
from tokenizer.runtime.errors import ConfigError, InputError
from tokenizer.runtime.files import save_safetensors
from tokenizer.runtime.hub import push_folder
from worldmodel.objectives import ActionSpace, Objective, ObjectiveConfig
from worldmodel.predictor import HistoryCache, PredictorConfig
from worldmodel.readout import Readout, ReadoutConfig, ReadoutState

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "world_model.safetensors"
READOUT_FILE = "readout.safetensors"
TOKENIZER_DIR = "tokenizer"


@dataclass
class WorldModelConfig:
    kind: str = "deltaworld"  # deltaworld (one token per frame) | dinoworld (every patch, the paper's baseline)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    actions: ActionSpace = field(default_factory=ActionSpace)
    num_samples: int = 20  # K imagined futures per clip when evaluating (the paper's 20)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)


@dataclass
class Dream:
    """R imagined futures in progress: the projected history, the newest decoded frame's features, time per row.

    `pending` holds tokens (R, D) imagined after `features` and not decoded yet (`WorldModel.decoded`
    catches up); `readout` is the readout's state when the model has one.
    """

    cache: HistoryCache
    features: torch.Tensor  # (R, N, D)
    time: torch.Tensor  # (R,)
    grid: tuple[int, int]
    pending: tuple[torch.Tensor, ...] = ()
    readout: ReadoutState | None = None


def check_clip(frames: torch.Tensor, timestamps: torch.Tensor, context: int, horizon: int) -> None:
    if frames.ndim != 5:
        raise InputError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
    if timestamps.shape != frames.shape[:2]:
        raise InputError(f"timestamps must be (B, T) = {tuple(frames.shape[:2])}, got {tuple(timestamps.shape)}")
    if horizon < 1 or context < 1:
        raise InputError(f"context ({context}) and horizon ({horizon}) must both be at least 1")
    if context + horizon > frames.shape[1]:
        raise InputError(f"context {context} + horizon {horizon} does not fit a clip of {frames.shape[1]} frames")


class WorldModel(nn.Module):
    def __init__(self, tokenizer: Tokenizer, objective: Objective, config: WorldModelConfig, readout: Readout | None = None):
        super().__init__()
        self.tokenizer = tokenizer.requires_grad_(False).eval()
        self.objective = objective
        self.readout = readout
        self.config = config

    def train(self, mode: bool = True) -> "WorldModel":
        super().train(mode)
        self.tokenizer.eval()  # frozen: its RoPE jitter must stay off
        return self

    @property
    def action_conditioned(self) -> bool:
        return self.objective.action_encoder is not None

    # Subclasses: what a frame's token is, how a clip trains the objective, and how imagination starts and steps.
    def token_shape(self, patches: int) -> tuple[int, ...]:
        """The shape of one frame's token for a frame of `patches` patches."""
        raise NotImplementedError

    def newest_tokens(self, features: torch.Tensor, frame_size: tuple[int, int]) -> torch.Tensor:
        """The newest context frame's tokens as `imagine` returns them, from context features (B, c, N, D)."""
        raise NotImplementedError

    def training_inputs(self, frames: torch.Tensor, timestamps: torch.Tensor, actions: torch.Tensor | None) -> dict:
        raise NotImplementedError

    def encode_context(self, features: torch.Tensor, timestamps: torch.Tensor, frame_size: tuple[int, int]) -> HistoryCache:
        """The predictor's history of context frames with features (B, c, N, D) at timestamps (B, c)."""
        raise NotImplementedError

    @torch.no_grad()
    def start(self, frames: torch.Tensor, timestamps: torch.Tensor, num_samples: int, features: torch.Tensor | None = None) -> Dream:
        """Context frames (B, c, 3, H, W) at timestamps (B, c) -> a Dream of B * num_samples rows.

        `features` (B, c, N, D) of those frames may be passed when already computed.
        """
        if features is None:
            features = self.tokenizer.features(frames)
        grid = self.tokenizer.grid(frames)
        cache = self.encode_context(features, timestamps, frames.shape[-2:])
        readout = None
        if self.readout is not None:
            readout = self.readout.start(self.readout.summarize(features[:, -1], grid), timestamps[:, -1]).repeat(num_samples)
        return Dream(
            cache=cache.repeat(num_samples),
            features=features[:, -1].repeat_interleave(num_samples, 0),
            time=timestamps[:, -1].repeat_interleave(num_samples, 0),
            grid=grid,
            readout=readout,
        )

    def imagine(self, dream: Dream, time: torch.Tensor, actions=None, generator=None, noise=None) -> tuple[torch.Tensor, Dream]:
        """Imagine the frame at `time` (R,) after `actions` (R, A) -> (its tokens, next dream), decoding only what
        the model needs to go on (nothing, for DeltaWorld: `decoded` catches up when features are wanted)."""
        raise NotImplementedError

    def decoded(self, dream: Dream) -> Dream:
        """The same dream with `features` of its newest frame (pending tokens decoded in order)."""
        return dream

    def step(self, dream: Dream, time: torch.Tensor, actions=None, generator=None, noise=None) -> tuple[torch.Tensor, torch.Tensor, Dream]:
        """Imagine the frame at `time` (R,) after `actions` (R, A) -> (its tokens, its features (R, N, D), next dream)."""
        tokens, dream = self.imagine(dream, time, actions, generator, noise)
        dream = self.decoded(dream)
        return tokens, dream.features, dream

    def summary(self, dream: Dream) -> torch.Tensor:
        """The readout's summary (R, g*g, D) of the dream's newest frame, without decoding."""
        if self.readout is None or dream.readout is None:
            raise ConfigError("this world model has no readout (model.readout.enabled); use a feature cost, which decodes")
        return self.readout.read(dream.readout, dream.time)

    @torch.no_grad()
    def rollout(
        self,
        frames: torch.Tensor,
        timestamps: torch.Tensor,
        context: int,
        horizon: int,
        num_samples: int | None = None,
        actions: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        noise: list[torch.Tensor] | None = None,
        features: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Imagine the last `horizon` frames of each clip from the `context` frames before them.

        frames (B, T, 3, H, W) uint8, timestamps (B, T), actions (B, T, A) with actions[:, t] leading into frame t;
        `features` (B, T, N, D) of the frames may be passed when already computed.
        Returns features (B, K, h, N, D), targets (B, h, N, D), context (B, c, N, D), and tokens (B, K, h, ...).
        `noise[s]` optionally fixes step s's starting noise (B * K rows), to replay another implementation.
        """
        check_clip(frames, timestamps, context, horizon)
        num_samples = num_samples or self.config.num_samples
        first = frames.shape[1] - context - horizon
        frames, timestamps = frames[:, first:], timestamps[:, first:]
        actions = actions[:, first:] if actions is not None else None
        features = self.tokenizer.features(frames) if features is None else features[:, first:]
        dream = self.start(frames[:, :context], timestamps[:, :context], num_samples, features[:, :context])
        batch = frames.shape[0]
        tokens, imagined = [], []
        for step in range(horizon):
            index = context + step
            step_actions = actions[:, index].repeat_interleave(num_samples, 0) if actions is not None else None
            time = timestamps[:, index].repeat_interleave(num_samples, 0)
            token, feature, dream = self.step(dream, time, step_actions, generator, noise[step] if noise else None)
            tokens.append(token)
            imagined.append(feature)
        return {
            "tokens": torch.stack(tokens, 1).unflatten(0, (batch, num_samples)),
            "features": torch.stack(imagined, 1).unflatten(0, (batch, num_samples)),
            "targets": features[:, context:],
            "context": features[:, :context],
        }

    def save_pretrained(self, folder: str | Path) -> None:
        """`config.yaml`, the trained weights, and the tokenizer it decodes with, so the folder stands alone."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_safetensors(self.objective.state_dict(), folder / WEIGHTS_FILE)
        if self.readout is not None:
            save_safetensors(self.readout.state_dict(), folder / READOUT_FILE)
        save_config(self.config, folder / CONFIG_FILE)
        self.tokenizer.save_pretrained(folder / TOKENIZER_DIR)

    def push_to_hub(self, repo_id: str, private: bool | None = None, token: str | None = None, commit_message: str | None = None) -> str:
        """Upload the `save_pretrained` folder (tokenizer included) as model repo `repo_id`; loads back by its id."""
        return push_folder(self.save_pretrained, repo_id, "world model", private, token, commit_message=commit_message)

    @classmethod
    def from_pretrained(cls, source: str | Path, *args, **kwargs) -> "WorldModel":
        """`worldmodel.loading.load_world_model` (a Hub id, our folder, or a released file): DeltaWorld or DINOWorld,
        whichever the source's config names."""
        # The loader picks the subclass from the config, so it lives above the subclasses' modules.
        from worldmodel.loading import load_world_model

        return load_world_model(source, *args, **kwargs)


def read_world_config(folder: str | Path) -> WorldModelConfig:
    return read_saved_config(WorldModelConfig, folder, "world model")
