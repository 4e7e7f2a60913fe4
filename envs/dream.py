"""DreamEnv (`deltaworld/Dream-v0`): a Gymnasium env whose dynamics are a trained world model's imagination.

    env = gymnasium.make("deltaworld/Dream-v0", model="runs/world_model_tiny_actions/final",
                         context=frames, goal_frame=goal, num_samples=8)

reset() starts from real context frames (or the first `context_length` frames of a
recorded episode); each step(action) imagines the next frame's token for all
`num_samples` samples at once, and decodes it to patch features only when the
observation, the reward or render() reads them. Observation: the K imagined
tokens (K, D) float32 (a patch-level model's "token" is its (N, D) features),
or a Dict with "token" and "features" (K, N, D). Reward: minus the goal cost of
`goal_frame` (`envs.goals.goal_cost`: the readout's token cost when the model has
one, else the feature distance; `cost=` picks), or `reward_fn(tokens, features) -> (K,)`,
averaged over the K samples (each sample's own in info["rewards"]); 0 without either.
render_mode="rgb_array" draws the K imagined frames side by side: as pixels when
`heads` (a heads folder or TaskHeads) holds an RGB head, else in segmentation
colours when it holds a segmentation head, else as a PCA of the features fitted
on the context frames.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from envs import DREAM_ENV_ID
from envs.goals import StepCost, as_step_cost, check_cost_kind, goal_cost
from envs.wrappers import frame_tensor, model_device
from tokenizer.runtime.errors import ConfigError, InputError
from tokenizer.runtime.files import load_weights
from worldmodel.heads import SegmentationHead, TaskHeads, load_heads
from worldmodel.pictures import FeaturePCA, colorize_seg, image_grid, upscale_nearest
from worldmodel.rgb_head import RGBHead
from worldmodel.world import WorldModel, load_world_model

RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (tokens (K, ...), features (K, N, D)) -> (K,)


def context_frames(frames: Any, device: torch.device | str = "cpu") -> torch.Tensor:
    """(c, H, W, 3) uint8 frames -> (1, c, 3, H, W) on `device`."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[0] < 1:
        raise InputError(f"context frames must be (c, H, W, 3) uint8 with c >= 1, got {frames.dtype} {frames.shape}")
    return torch.cat([frame_tensor(frame, device=device) for frame in frames], 1)


def episode_context(path: str | Path, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `length` frames (c, H, W, 3) and timestamps (c,) of a recorded episode file."""
    episode = load_weights(path, f"episode file {path}")
    if "frames" not in episode or "timestamps" not in episode:
        raise InputError(f"{path} is not an episode file from `python -m envs.recording`")
    return episode["frames"][:length].permute(0, 2, 3, 1).numpy(), episode["timestamps"][:length].numpy()


class DreamEnv(gymnasium.Env):
    """Imagined dynamics of an action-conditioned world model, batched over K samples.

    Action: the model's space (a Box [-1, 1]^A unless `action_space` is given,
    Discrete(n) for discrete models), shared by all samples; step() also takes
    (K, A) to act differently per sample. Never terminates by itself.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        model: WorldModel | str | Path | None = None,
        context: Any = None,
        timestamps: Any = None,
        episode: str | Path | None = None,
        context_length: int = 4,
        goal_frame: Any = None,
        reward_fn: RewardFn | None = None,
        num_samples: int = 1,
        dt: float | None = None,
        action_space: spaces.Space | None = None,
        features: bool = False,
        frame_size: int = 64,
        cost: str = "auto",
        render_mode: str | None = None,
        heads: str | Path | list[str | Path] | TaskHeads | None = None,
        device: torch.device | str | None = None,
    ):
        """model: a WorldModel, its saved folder, or a Hub id (worldmodel.world.load_world_model);
        context (c, H, W, 3) uint8 at `timestamps` (c,) seconds, or `episode`, a recorded episode file; dt: seconds per
        step (default: the context's last interval, else 0.1); cost: the goal reward's kind, "auto" | "token" |
        "features"; heads (TaskHeads, or what load_heads takes: folders, ids): render() draws by RGB or segmentation;
        device: moves the model there first (default: where it is). The env imagines on the model's device as it
        is when the env is made."""
        if model is None:
            raise ConfigError(
                f"{DREAM_ENV_ID} needs a trained action-conditioned world model: "
                f"gymnasium.make('{DREAM_ENV_ID}', model='runs/world_model_tiny_actions/final', context=frames)"
            )
        world = model if isinstance(model, WorldModel) else load_world_model(model)
        self.world = (world if device is None else world.to(device)).eval()
        self.device = model_device(self.world)
        if num_samples < 1:
            raise ConfigError(f"num_samples must be at least 1, got {num_samples}")
        check_cost_kind(cost)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ConfigError(f"render_mode {render_mode!r} is not one of {self.metadata['render_modes']}")
        self.render_mode, self.cost_kind = render_mode, cost
        self.num_samples, self.include_features, self.dt = num_samples, features, dt
        # A reward function reads features, as a feature cost does (but higher is better).
        self.reward_fn: StepCost | None = None if reward_fn is None else as_step_cost(reward_fn)
        self._picture_head = self._picture_head_of(heads)
        self.context_length = context_length
        self._default_context = self._read_context(context, timestamps, episode)
        self.action_space = action_space or self._model_action_space()
        size = frame_size if self._default_context is None else self._default_context[0].shape[-1]
        rows, cols = self.world.tokenizer.backbone.grid(size, size)
        dim, count = self.world.tokenizer.dim, num_samples
        tokens = spaces.Box(-np.inf, np.inf, (count, *self.world.token_shape(rows * cols)), np.float32)
        self.observation_space = (
            spaces.Dict(
                {"token": tokens, "features": spaces.Box(-np.inf, np.inf, (count, rows * cols, dim), np.float32)}
            )
            if features
            else tokens
        )
        self._goal = None if goal_frame is None else goal_cost(self.world, goal_frame, cost)
        self._dream = None
        self._pca: FeaturePCA | None = None
        self._frame_size: tuple[int, int] = (size, size)
        # The model draws its samples' noise on its own device with this generator; a CPU one gives the CPU stream.
        self._generator = torch.Generator(self.device)

    def _picture_head_of(
        self, heads: str | Path | list[str | Path] | TaskHeads | None
    ) -> RGBHead | SegmentationHead | None:
        """The head render() draws with: the RGB head when there is one (frames as they would look), else
        segmentation."""
        if heads is None:
            return None
        tokenizer = self.world.tokenizer
        loaded = heads if isinstance(heads, TaskHeads) else load_heads(heads, tokenizer)
        head = loaded.rgb if loaded.rgb is not None else loaded.segmentation
        if head is None:
            raise ConfigError(
                f"heads {heads} hold neither an RGB nor a segmentation head to draw the imagined frames with"
            )
        return head.to(self.device).eval()

    def _model_action_space(self) -> spaces.Space:
        actions = self.world.config.actions
        if actions.dim:
            return spaces.Box(-1.0, 1.0, (actions.dim,), np.float32)
        # An unconditioned model ignores actions; a single no-op keeps the Gymnasium API whole.
        return spaces.Discrete(actions.num_actions or 1)

    def _read_context(
        self, context: Any, timestamps: Any, episode: str | Path | None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if episode is not None:
            context, timestamps = episode_context(episode, self.context_length)
        if context is None:
            return None
        frames = context_frames(context, self.device)
        count = frames.shape[1]
        if timestamps is None:
            times = torch.arange(count, dtype=torch.float32, device=self.device) * (self.dt or 0.1)
        else:
            times = torch.as_tensor(np.asarray(timestamps, dtype=np.float32), device=self.device)
        if times.shape != (count,):
            raise InputError(f"timestamps must be ({count},) seconds, one per context frame, got {tuple(times.shape)}")
        return frames, (times - times[0])[None]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """options may give "context" (c, H, W, 3) with "timestamps" (c,), an "episode" file, and a "goal_frame"."""
        super().reset(seed=seed)
        options = options or {}
        if "goal_frame" in options:
            self._goal = goal_cost(self.world, options["goal_frame"], self.cost_kind)
        start = (
            self._read_context(options.get("context"), options.get("timestamps"), options.get("episode"))
            or self._default_context
        )
        if start is None:
            raise ConfigError(
                f"{DREAM_ENV_ID} has no context frames: pass context= or episode= to make(), "
                "or options={'context': frames} to reset()"
            )
        self._generator.manual_seed(int(self.np_random.integers(2**62)))
        frames, times = start
        with torch.no_grad():
            features = self.world.tokenizer.features(frames)
            self._dream = self.world.start(frames, times, self.num_samples, features)
            token = self.world.newest_tokens(features, frames.shape[-2:])
        self._frame_size = tuple(frames.shape[-2:])
        self._pca = FeaturePCA.fit(features[0])
        if self.dt is None:
            self._step_dt = float(times[0, -1] - times[0, -2]) if times.shape[1] > 1 else 0.1
        else:
            self._step_dt = self.dt
        last = features[:, -1].expand(self.num_samples, -1, -1)
        return self._observation(token.expand(self.num_samples, *token.shape[1:]), last), {"time": float(times[0, -1])}

    def _actions(self, action: Any) -> torch.Tensor | None:
        if not self.world.action_conditioned:
            return None
        try:
            array = np.asarray(action, dtype=np.float32)
        except (TypeError, ValueError):
            raise InputError(f"a {DREAM_ENV_ID} action is numbers in {self.action_space}, not {action!r}") from None
        if not np.all(np.isfinite(array)):
            # One NaN would stay in the imagined state until reset(): refused as Shapes-v0 refuses it.
            raise InputError(f"a {DREAM_ENV_ID} action must be finite, got {array.tolist()}")
        if isinstance(self.action_space, spaces.Discrete):
            array = array.reshape(-1, 1)
        elif isinstance(self.action_space, spaces.Box):
            # Out-of-range actions are clipped to the Box, as Shapes-v0 clips its velocity.
            array = np.clip(array, self.action_space.low, self.action_space.high)
        if array.ndim == 1:
            array = np.tile(array, (self.num_samples, 1))
        if array.shape[0] != self.num_samples:
            raise InputError(
                f"an action is {self.action_space.shape} for all samples or one per sample ({self.num_samples}, "
                f"...), got {array.shape}"
            )
        return torch.from_numpy(array).to(self.device)

    @torch.no_grad()
    def step(self, action: Any):
        if self._dream is None:
            raise gymnasium.error.ResetNeeded("call reset() before step() on the dream env")
        time = self._dream.time + self._step_dt
        tokens, self._dream = self.world.imagine(self._dream, time, self._actions(action), self._generator)
        scorer = self.reward_fn or self._goal
        if self.include_features or (scorer is not None and scorer.needs_features):
            self._dream = self.world.decoded(self._dream)
        if self.reward_fn is not None:
            rewards = self.reward_fn(self.world, self._dream, tokens).float()
        elif self._goal is not None:
            rewards = -self._goal(self.world, self._dream, tokens).float()
        else:
            rewards = torch.zeros(self.num_samples, device=self.device)
        info = {"rewards": rewards.cpu().numpy(), "time": float(time[0])}
        features = self._dream.features if self.include_features else None
        return self._observation(tokens, features), float(rewards.mean()), False, False, info

    def _observation(self, tokens: torch.Tensor, features: torch.Tensor | None) -> np.ndarray | dict[str, np.ndarray]:
        token = tokens.float().cpu().numpy()
        if not self.include_features:
            return token
        return {"token": token, "features": features.float().cpu().numpy()}

    @torch.no_grad()
    def render(self) -> np.ndarray | None:
        """The K imagined frames of the newest step side by side, uint8 (rows * H, cols * W, 3); None without
        render_mode."""
        if self.render_mode is None:
            return None
        if self._dream is None:
            raise gymnasium.error.ResetNeeded("call reset() before render() on the dream env")
        self._dream = self.world.decoded(self._dream)
        features, grid = self._dream.features, self._dream.grid
        height, width = self._frame_size
        if isinstance(self._picture_head, RGBHead):
            images = self._picture_head.render(features.float(), grid).permute(0, 2, 3, 1).cpu().numpy()
        elif self._picture_head is not None:
            images = colorize_seg(self._picture_head.predict(features.float(), grid, (height, width)))
        else:
            images = upscale_nearest(self._pca.to_rgb(features, grid), max(1, height // grid[0]))
        columns = int(np.ceil(np.sqrt(len(images))))
        rows = [list(images[start : start + columns]) for start in range(0, len(images), columns)]
        return image_grid(rows)
