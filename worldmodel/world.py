"""What DeltaWorld and the patch-level DINOWorld share: config, imagination loop, files.

A world model is a frozen tokenizer (DINOWorld uses only its backbone) plus a
trainable objective around a predictor, and optionally a readout (a small model
that summarises imagined frames from their tokens, for costs that must not decode).
Subclasses say how a clip becomes training inputs and how one imagined step is made;
the rollout, saving and loading are common. Imagination rows are batch-major: row
b * K + k is sample k of clip b.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from tokenizer.model import Tokenizer
from tokenizer.released import RELEASED, WORLD_MODEL, released_model
from tokenizer.runtime.config import merge_config, read_saved_config, save_config, to_object
from tokenizer.runtime.errors import CheckpointError, ConfigError, InputError
from tokenizer.runtime.files import load_module_weights, load_weights, save_safetensors
from tokenizer.runtime.hub import is_repo_id, push_folder, resolve
from worldmodel.objectives import ActionSpace, Objective, ObjectiveConfig
from worldmodel.predictor import HistoryCache, PredictorConfig
from worldmodel.readout import Readout, ReadoutConfig, ReadoutState

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "world_model.safetensors"
READOUT_FILE = "readout.safetensors"
TOKENIZER_DIR = "tokenizer"


@dataclass
class WorldModelConfig:
    """The world model around the frozen tokenizer: its predictor, training objective, actions and optional readout."""

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

    def repeat(self, times: int) -> Dream:
        """Each of the R rows `times` times in a row (R * times rows): one dream per sample or candidate."""
        if self.pending:
            raise InputError("decode a dream's pending tokens (WorldModel.decoded) before repeating it")
        return Dream(
            self.cache.repeat(times),
            self.features.repeat_interleave(times, 0),
            self.time.repeat_interleave(times, 0),
            self.grid,
            readout=self.readout.repeat(times) if self.readout is not None else None,
        )


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
    """A world model: a frozen tokenizer plus a trainable objective around a predictor (and optionally a readout).

    `predict(frames (B, T, 3, H, W), timestamps (B, T), horizon)` imagines K futures: features (B, K, h, N, D);
    `start` / `imagine` / `decoded` step a `Dream` of R rows one frame at a time (what planners use). The kinds are
    `DeltaWorld` (one token per frame) and `DINOWorld` (every patch); `load_world_model(id_or_folder)` or
    `WorldModel.from_pretrained` loads either, `WorldModel.build(tokenizer, config)` makes a fresh one.
    """

    # model.kind -> the subclass that makes it, filled as each is defined (`class DeltaWorld(WorldModel, kind=...)`).
    kinds: dict[str, type[WorldModel]] = {}
    # Whether training can read a token cache (data.source=tokens) instead of frames: `inputs_from_tokens`.
    trains_on_tokens = False

    def __init_subclass__(cls, kind: str | None = None, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if kind is not None:
            WorldModel.kinds[kind] = cls

    def __init__(
        self, tokenizer: Tokenizer, objective: Objective, config: WorldModelConfig, readout: Readout | None = None
    ):
        super().__init__()
        self.tokenizer = tokenizer.requires_grad_(False).eval()
        self.objective = objective
        self.readout = readout
        self.config = config

    def train(self, mode: bool = True) -> WorldModel:
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

    def frame_tokens(
        self, features: torch.Tensor, prev: torch.Tensor | None, frame_size: tuple[int, int]
    ) -> torch.Tensor:
        """The tokens (P, *token_shape) of P frames of `frame_size` (H, W) with features (P, N, D), each taken
        against the features `prev` (P, N, D) of the frame before it; None: the black frame's, as a clip's first
        frame is taken (`Tokenizer.black_features`)."""
        raise NotImplementedError

    def newest_tokens(self, features: torch.Tensor, frame_size: tuple[int, int]) -> torch.Tensor:
        """The newest context frame's tokens as `imagine` returns them, from context features (B, c, N, D)."""
        prev = features[:, -2] if features.shape[1] > 1 else None  # one frame: from the black frame
        return self.frame_tokens(features[:, -1], prev, frame_size)

    def training_inputs(self, frames: torch.Tensor, timestamps: torch.Tensor, actions: torch.Tensor | None) -> dict:
        raise NotImplementedError

    def context_tokens(self, features: torch.Tensor, frame_size: tuple[int, int]) -> torch.Tensor:
        """The tokens (B, c, *token_shape) of context frames with features (B, c, N, D): the first taken against the
        black frame, each later one against the frame before it."""
        raise NotImplementedError

    def encode_tokens(self, tokens: torch.Tensor, timestamps: torch.Tensor, grid: tuple[int, int]) -> HistoryCache:
        """The predictor's history of context tokens (B, c, *token_shape) at timestamps (B, c)."""
        raise NotImplementedError

    @torch.no_grad()
    def start(
        self, frames: torch.Tensor, timestamps: torch.Tensor, num_samples: int, features: torch.Tensor | None = None
    ) -> Dream:
        """Context frames (B, c, 3, H, W) at timestamps (B, c) -> a Dream of B * num_samples rows.

        `features` (B, c, N, D) of those frames may be passed when already computed.
        """
        if features is None:
            features = self.tokenizer.features(frames)
        tokens = self.context_tokens(features, frames.shape[-2:])
        return self.start_from_tokens(tokens, features[:, -1], timestamps, self.tokenizer.grid(frames), num_samples)

    @torch.no_grad()
    def start_from_tokens(
        self,
        tokens: torch.Tensor,
        newest: torch.Tensor,
        timestamps: torch.Tensor,
        grid: tuple[int, int],
        num_samples: int,
    ) -> Dream:
        """`start` from context tokens already taken (`context_tokens`, or `frame_tokens` frame by frame):
        tokens (B, c, *token_shape) at timestamps (B, c), the newest frame's features (B, N, D) on a patch `grid`
        -> a Dream of B * num_samples rows. Only the predictor's projections of the tokens and the readout's start
        from the newest frame are computed."""
        if tokens.shape[:2] != timestamps.shape or newest.shape[0] != tokens.shape[0]:
            raise InputError(
                f"context tokens (B, c, ...) {tuple(tokens.shape)} need timestamps (B, c), got "
                f"{tuple(timestamps.shape)}, and the newest frame's features (B, N, D), got {tuple(newest.shape)}"
            )
        cache = self.encode_tokens(tokens, timestamps, grid)
        readout = None
        if self.readout is not None:
            readout = self.readout.start(self.readout.summarize(newest, grid), timestamps[:, -1])
        return Dream(cache, newest, timestamps[:, -1], grid, readout=readout).repeat(num_samples)

    def imagine(
        self, dream: Dream, time: torch.Tensor, actions=None, generator=None, noise=None
    ) -> tuple[torch.Tensor, Dream]:
        """Imagine the frame at `time` (R,) after `actions` (R, A) -> (its tokens, next dream), decoding only what
        the model needs to go on (nothing, for DeltaWorld: `decoded` catches up when features are wanted)."""
        raise NotImplementedError

    def observe(self, dream: Dream, time: torch.Tensor, tokens: torch.Tensor) -> Dream:
        """The dream with the frame at `time` (R,) given, not imagined: its tokens (R, *token_shape), a real frame's
        as `frame_tokens` takes them, go into the history as `imagine` puts its own (what the world model would make
        of the real future, e.g. to tell the tokenizer's share of a forecast error from the predictor's)."""
        raise NotImplementedError

    def decoded(self, dream: Dream) -> Dream:
        """The same dream with `features` of its newest frame (pending tokens decoded in order)."""
        return dream

    def step(
        self, dream: Dream, time: torch.Tensor, actions=None, generator=None, noise=None
    ) -> tuple[torch.Tensor, torch.Tensor, Dream]:
        """Imagine the frame at `time` (R,) after `actions` (R, A) -> (its tokens, its features (R, N, D), next
        dream)."""
        tokens, dream = self.imagine(dream, time, actions, generator, noise)
        dream = self.decoded(dream)
        return tokens, dream.features, dream

    def summary(self, dream: Dream) -> torch.Tensor:
        """The readout's summary (R, g*g, D) of the dream's newest frame, without decoding."""
        if self.readout is None or dream.readout is None:
            raise ConfigError(
                "this world model has no readout (model.readout.enabled); use a feature cost, which decodes"
            )
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

    @torch.no_grad()
    def predict(
        self,
        frames: torch.Tensor,
        timestamps: torch.Tensor,
        horizon: int,
        num_samples: int | None = None,
        dt: float | None = None,
        actions: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Imagine K futures of `horizon` frames after the end of each clip.

        frames (B, T, 3, H, W) uint8 are all context, at timestamps (B, T) in seconds; imagined frame i
        (1-based) lies at the last timestamp + i * dt, `dt` being the batch's mean frame spacing unless given
        (a one-frame clip needs it). Inputs may be on any device: they are moved to the model's. actions (B, h, A): the
        action leading into each imagined frame.
        Returns features (B, K, h, N, D), tokens (B, K, h, ...) and times (B, h).
        """
        if frames.ndim != 5 or timestamps.shape != frames.shape[:2]:
            raise InputError(
                f"frames must be (B, T, 3, H, W) with timestamps (B, T), got {tuple(frames.shape)} and "
                f"{tuple(timestamps.shape)}"
            )
        if horizon < 1:
            raise InputError(f"horizon must be at least 1, got {horizon}")
        if dt is None:
            if frames.shape[1] < 2:
                raise InputError("a one-frame clip has no frame spacing: pass dt (seconds between imagined frames)")
            dt = ((timestamps[:, -1] - timestamps[:, 0]) / (frames.shape[1] - 1)).mean().item()
        if not dt > 0:
            raise InputError(f"dt must be positive, got {dt}")
        if actions is not None and tuple(actions.shape[:2]) != (frames.shape[0], horizon):
            raise InputError(
                f"actions must be (B, horizon, A) = ({frames.shape[0]}, {horizon}, A), got {tuple(actions.shape)}"
            )
        num_samples = num_samples or self.config.num_samples
        batch = frames.shape[0]
        device = next(self.objective.parameters()).device
        frames, timestamps = frames.to(device), timestamps.to(device)
        actions = actions.to(device) if actions is not None else None
        dream = self.start(frames, timestamps, num_samples)
        times = timestamps[:, -1:].to(dream.time) + dt * torch.arange(1, horizon + 1, device=dream.time.device)
        tokens, features = [], []
        for step in range(horizon):
            step_actions = actions[:, step].repeat_interleave(num_samples, 0) if actions is not None else None
            token, feature, dream = self.step(
                dream, times[:, step].repeat_interleave(num_samples, 0), step_actions, generator
            )
            tokens.append(token)
            features.append(feature)
        return {
            "features": torch.stack(features, 1).unflatten(0, (batch, num_samples)),
            "tokens": torch.stack(tokens, 1).unflatten(0, (batch, num_samples)),
            "times": times,
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

    def push_to_hub(
        self, repo_id: str, private: bool | None = None, token: str | None = None, commit_message: str | None = None
    ) -> str:
        """Upload the `save_pretrained` folder (tokenizer included) as model repo `repo_id`; loads back by its id."""
        return push_folder(self.save_pretrained, repo_id, "world model", private, token, commit_message=commit_message)

    @classmethod
    def build(cls, tokenizer: Tokenizer, config: WorldModelConfig) -> WorldModel:
        """A fresh world model of `config.kind` around the frozen `tokenizer` (subclasses build their own kind)."""
        if config.kind not in WorldModel.kinds:
            raise ConfigError(f"model.kind {config.kind!r} is not one of {', '.join(WorldModel.kinds)}")
        if config.num_samples < 1:
            raise ConfigError(f"model.num_samples must be at least 1, got {config.num_samples}")
        return WorldModel.kinds[config.kind].build(tokenizer, config)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        tokenizer: Tokenizer | None = None,
        config: WorldModelConfig | None = None,
        *,
        backbone: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        device: str | torch.device | None = None,
    ) -> WorldModel:
        """Load a world model, in eval mode, from a Hub id, our saved folder, or a released predictor file;
        DeltaWorld or DINOWorld, whichever its config names.

        `source`: a released id (`Amazon-FAR/deltaworld-kinetics`: config and tokenizer from tokenizer.released),
        a Hub repo or local folder written by `save_pretrained` / `push_to_hub` (config and tokenizer inside),
        or a bare weights file (`predictor.*` keys) whose `config` and `tokenizer` must be given. A given
        `tokenizer` or `config` replaces the saved or released one. `backbone`, `revision`, `cache_dir` and
        `device` mean what they mean for `Tokenizer.from_pretrained`.
        """
        released = released_model(source, WORLD_MODEL)
        path = resolve(source, "world model", revision, cache_dir)
        own_folder = path.is_dir() and (path / CONFIG_FILE).is_file()
        if own_folder:
            config = config or read_world_config(path)
            tokenizer = tokenizer or Tokenizer.from_pretrained(
                path / TOKENIZER_DIR, backbone=backbone, cache_dir=cache_dir
            )
            weights = path / WEIGHTS_FILE
        elif released is not None:
            config = config or to_object(
                merge_config(WorldModelConfig, released.config, origin=f"released {released.repo_id}")
            )
            if tokenizer is None:
                tokenizer_source: str | Path = released.tokenizer
                if not is_repo_id(source):
                    # A local copy (`hf download --local-dir`) finds its tokenizer's copy beside it, named as the repo:
                    # the offline way. Otherwise the released tokenizer comes by its id.
                    sibling = (path if path.is_dir() else path.parent).parent / RELEASED[released.tokenizer].name
                    tokenizer_source = sibling if sibling.is_dir() else tokenizer_source
                tokenizer = Tokenizer.from_pretrained(tokenizer_source, backbone=backbone, cache_dir=cache_dir)
            weights = path / released.filename if path.is_dir() else path
        elif path.is_dir():
            raise CheckpointError(
                f"{source} holds no {CONFIG_FILE}: pass a folder written by save_pretrained, a released id, a local "
                "copy of one under its repo's name (deltaworld-kinetics/), or a weights file with its config and "
                "tokenizer"
            )
        elif config is None or tokenizer is None:
            raise CheckpointError(
                f"{source} is a bare weights file: pass the world-model config and the tokenizer it was trained with"
            )
        else:
            weights = path
        if not own_folder and config.readout.enabled:
            log.warning(
                "%s is a bare weights file without a readout: loading it without one (planning uses the feature cost)",
                source,
            )
            config = replace(config, readout=replace(config.readout, enabled=False))
        world = WorldModel.build(tokenizer, config)
        state = load_weights(weights, f"world-model checkpoint {weights}")
        # Released files hold only trained weights; a frozen tokenizer copy, if present, is not ours to load.
        state = {key: value for key, value in state.items() if not key.startswith(("tokenizer.", "backbone."))}
        load_module_weights(world.objective, state, f"world-model checkpoint {weights}")
        if world.readout is not None:
            readout = path / READOUT_FILE
            readout_state = load_weights(readout, "readout")
            if config.readout.anchor_queries and not any(key.startswith("anchor_proj.") for key in readout_state):
                raise CheckpointError(
                    f"readout {readout} was saved before readouts had anchored queries: "
                    f"add `anchor_queries: false` under `readout:` in {path / 'config.yaml'} to load it as it was "
                    "trained"
                )
            load_module_weights(world.readout, readout_state, f"readout {readout}")
        return world.to(device).eval() if device is not None else world.eval()


def read_world_config(folder: str | Path) -> WorldModelConfig:
    return read_saved_config(WorldModelConfig, folder, "world model")


# Function forms, for code that prefers functions.
build_world_model = WorldModel.build
load_world_model = WorldModel.from_pretrained
