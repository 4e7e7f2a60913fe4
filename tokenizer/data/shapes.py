"""The Shapes world: a small synthetic 2-D scene with exact segmentation and depth.

One controlled agent (a yellow diamond) and `num_distractors` circles, squares
and triangles sit in front of a wall-to-floor gradient. Positions live in the
unit square [0, 1]^2 (x right, y down) and map to pixels by `* frame_size`.
Each shape has a depth, fixed for the episode, that sets its apparent size
(~1/depth) and its fog; the background's depth and colour depend on the row.

This module holds the simulator (`ShapesWorld`) and `ShapesClips`, a torch Dataset
of seeded, reproducible clips under a smooth random policy, for training and
validating the tokenizer and world model. The Gymnasium env built on the same
world, `deltaworld/Shapes-v0`, is `envs.shapes.ShapesEnv`.

All randomness flows through explicit `np.random.Generator`s.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from tokenizer.data.sampling import UNBOUNDED_CLIPS
from tokenizer.data.shapes_render import (
    AGENT,
    CLASS_NAMES,
    DISTRACTOR_CLASSES,
    NUM_CLASSES,
    SHAPE_COLORS,
    apparent_color,
    background,
    draw_shapes,
)
from tokenizer.runtime.errors import ConfigError, InputError

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "SPAWN_MARGIN",
    "ShapesClips",
    "ShapesConfig",
    "ShapesFrame",
    "ShapesWorld",
    "check_config",
]

# Shapes and goals start this far from the walls, so that they begin fully in view.
SPAWN_MARGIN = 0.1


@dataclasses.dataclass
class ShapesConfig:
    """Everything that defines a Shapes world (the `data.shapes` config section).

    Lengths are in units of the frame width (the arena is [0, 1]^2), speeds in
    those units per second, depths in metres, rates per second.
    """

    frame_size: int = 64  # pixels per side; a multiple of the 8-pixel patch
    fps: float = 10.0  # simulator steps per second; dt = 1 / fps
    num_distractors: int = 3  # randomly moving circles, squares and triangles beside the agent
    agent_speed: float = 0.4  # speed at |action| = 1
    distractor_speed: float = 0.25  # speed of every distractor
    turn_rate: float = 0.5  # Poisson rate of a distractor's random direction changes
    success_radius: float = 0.1  # the goal is reached when the agent is nearer than this
    min_depth: float = 2.5  # shape depths are uniform in [min_depth, max_depth]
    max_depth: float = 5.0  # the deepest a shape can be (see min_depth)
    near_radius: float = 0.1875  # apparent radius at min_depth (12 px at 64 px); scales as 1/depth
    background_far_depth: float = 12.0  # depth of the top row
    background_near_depth: float = 4.0  # depth of the bottom row
    fog_depth: float = 16.0  # colours blend linearly toward the fog colour, reaching it at this depth
    color_jitter: int = 12  # per-shape uniform jitter of each RGB channel, +- (re-centred to keep R + G + B)
    policy_std: float = 0.6  # clips' random policy: stationary std of each action component
    policy_timescale: float = 1.0  # clips' random policy: correlation time in seconds

    def validate(self) -> None:
        """Raise ConfigError, in one sentence, on the first value that cannot work."""
        if not isinstance(self.frame_size, int) or self.frame_size < 8 or self.frame_size % 8:
            raise ConfigError(
                f"data.shapes.frame_size must be a positive multiple of 8 (the patch size), got {self.frame_size!r}"
            )
        if not isinstance(self.num_distractors, int) or self.num_distractors < 0:
            raise ConfigError(
                f"data.shapes.num_distractors must be a non-negative integer, got {self.num_distractors!r}"
            )
        positive = (
            "fps",
            "success_radius",
            "min_depth",
            "near_radius",
            "background_far_depth",
            "background_near_depth",
            "policy_timescale",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"data.shapes.{name} must be positive, got {getattr(self, name)!r}")
        for name in ("agent_speed", "distractor_speed", "turn_rate", "color_jitter", "policy_std"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"data.shapes.{name} must be non-negative, got {getattr(self, name)!r}")
        # Base channels lie in [20, 235] and re-centred jitter reaches 4/3 * color_jitter: more would clip.
        if self.color_jitter > 15:
            raise ConfigError(
                f"data.shapes.color_jitter must be at most 15 so colours never clip, got {self.color_jitter!r}"
            )
        if not self.max_depth >= self.min_depth:
            raise ConfigError(f"data.shapes.max_depth ({self.max_depth}) must be at least min_depth ({self.min_depth})")
        # Beyond fog_depth every surface is pure fog, and depth could no longer be read from colour.
        if not self.fog_depth >= max(self.max_depth, self.background_far_depth, self.background_near_depth):
            raise ConfigError(
                f"data.shapes.fog_depth ({self.fog_depth}) must be at least every shape and background depth"
            )


class ShapesFrame(NamedTuple):
    """One rendered frame and its ground truth."""

    rgb: np.ndarray  # (S, S, 3) uint8
    segmentation: np.ndarray  # (S, S) uint8 class ids, 0 = background
    depth: np.ndarray  # (S, S) float32 metres of the visible surface


class ShapesWorld:
    """State, dynamics and rendering of one scene; no Gymnasium API, no rewards.

    Shape index 0 is the agent, 1..N the distractors. State: positions
    (N + 1, 2) in [0, 1]^2, directions (N, 2) unit velocity directions of the
    distractors, depths (N + 1,) metres, base_colors (N + 1, 3) fog-free RGB
    (all float64) and classes (N + 1,) int64. Colours and sizes are derived
    from depth at render time, so tests and tools may edit the state in place.
    """

    def __init__(self, config: ShapesConfig, rng: np.random.Generator):
        """Draw a fresh scene from `rng`, which the world keeps for its random turns."""
        config.validate()
        self.config = config
        self.rng = rng
        count = config.num_distractors + 1
        self.classes = np.concatenate([[AGENT], rng.choice(DISTRACTOR_CLASSES, size=config.num_distractors)]).astype(
            np.int64
        )
        self.depths = rng.uniform(config.min_depth, config.max_depth, size=count)
        self.positions = rng.uniform(SPAWN_MARGIN, 1.0 - SPAWN_MARGIN, size=(count, 2))
        self.directions = _unit_vectors(rng.uniform(0.0, 2.0 * math.pi, size=config.num_distractors))
        jitter = rng.integers(-config.color_jitter, config.color_jitter + 1, size=(count, 3)).astype(np.float64)
        # Zero-sum jitter keeps R + G + B, and so depth, readable from colour.
        jitter -= jitter.mean(axis=1, keepdims=True)
        base = np.array([SHAPE_COLORS[int(c)] for c in self.classes], dtype=np.float64).reshape(count, 3)
        self.base_colors = np.clip(base + jitter, 0, 255)
        self.num_steps = 0

    @property
    def time(self) -> float:
        """Seconds since the scene was drawn."""
        return self.num_steps / self.config.fps

    @property
    def agent_position(self) -> np.ndarray:
        """(2,) float64 copy of the agent's (x, y)."""
        return self.positions[0].copy()

    def step(self, action: np.ndarray) -> None:
        """Advance by one simulator step of 1 / fps seconds.

        action: (2,) velocity command, clipped to [-1, 1]; the agent moves by
        action * agent_speed * dt and stops at the walls. Distractors turn to a
        uniformly random direction with probability 1 - exp(-turn_rate * dt)
        (a Poisson process), then move at constant speed and bounce off the walls.
        """
        config = self.config
        dt = 1.0 / config.fps
        velocity = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) * config.agent_speed
        self.positions[0] = np.clip(self.positions[0] + velocity * dt, 0.0, 1.0)

        count = config.num_distractors
        # A fixed number of draws per step keeps the random stream aligned however many shapes turn.
        turns = self.rng.random(count) < -math.expm1(-config.turn_rate * dt)
        new_directions = _unit_vectors(self.rng.uniform(0.0, 2.0 * math.pi, size=count))
        self.directions = np.where(turns[:, None], new_directions, self.directions)

        moved = self.positions[1:] + self.directions * (config.distractor_speed * dt)
        below, above = moved < 0.0, moved > 1.0
        moved = np.where(below, -moved, np.where(above, 2.0 - moved, moved))
        self.directions = np.where(below | above, -self.directions, self.directions)
        self.positions[1:] = moved
        self.num_steps += 1

    def render_into(
        self, rgb: np.ndarray, segmentation: np.ndarray, depth: np.ndarray, agent_position: np.ndarray | None = None
    ) -> None:
        """Render into preallocated arrays: rgb (S, S, 3) uint8, segmentation (S, S) integer, depth (S, S) float32.

        agent_position: optional (2,) to draw the agent somewhere else (the goal image).
        """
        config = self.config
        size = config.frame_size
        background_rgb, background_depth = background(
            size, config.background_far_depth, config.background_near_depth, config.fog_depth
        )
        rgb[...] = background_rgb
        segmentation[...] = 0
        depth[...] = background_depth
        positions = self.positions
        if agent_position is not None:
            positions = positions.copy()
            positions[0] = agent_position
        radii = config.near_radius * size * config.min_depth / self.depths
        colors = apparent_color(self.base_colors, self.depths, config.fog_depth)
        draw_shapes(rgb, segmentation, depth, positions * size, radii, self.classes, colors, self.depths)

    def render(self, agent_position: np.ndarray | None = None) -> ShapesFrame:
        """The current frame in fresh arrays (see `render_into`)."""
        size = self.config.frame_size
        frame = ShapesFrame(
            np.empty((size, size, 3), dtype=np.uint8),
            np.empty((size, size), dtype=np.uint8),
            np.empty((size, size), dtype=np.float32),
        )
        self.render_into(*frame, agent_position=agent_position)
        return frame


def _unit_vectors(angles: np.ndarray) -> np.ndarray:
    """(K,) angles in radians -> (K, 2) unit vectors (cos, sin)."""
    return np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def check_config(config: Any) -> ShapesConfig:
    if not isinstance(config, ShapesConfig):
        raise ConfigError(
            f"expected a ShapesConfig, got {type(config).__name__}; build one with ShapesConfig(...) or "
            "OmegaConf.to_object"
        )
    config.validate()
    return config


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


class ShapesClips(torch.utils.data.Dataset):
    """Seeded Shapes clips: clip `sample_id` is a pure function of (seed, split, sample_id).

    Each clip is a fresh episode under a smooth random policy (an
    Ornstein-Uhlenbeck process, clipped to [-1, 1]) that keeps every
    `stride`-th simulator frame, the stride drawn per clip from `strides`;
    the action is held constant within a stride. A clip is a dict:
      "frames"        (T, 3, S, S) uint8
      "timestamps"    (T,) float32 seconds, 0 first (stride 2 at 10 fps: 0, 0.2, 0.4, ...)
      "actions"       (T, 2) float32; actions[t] moved the agent from frame t-1 to t; actions[0] = 0
      "segmentation"  (T, S, S) int64 class ids (255 = ignore, never produced here)
      "depth"         (T, S, S) float32 metres (0 = invalid, never produced here)
    """

    labels_last_frame_only = False  # every frame carries its labels

    def __init__(
        self,
        config: ShapesConfig,
        num_frames: int,
        seed: int,
        split: str = "train",
        num_clips: int | None = None,
        strides: Sequence[int] = (1,),
    ):
        """num_clips=None makes an unbounded set (len UNBOUNDED_CLIPS, any id >= 0 is valid) to be sampled by id."""
        self.config = check_config(config)
        if not _is_int(num_frames) or num_frames < 1:
            raise ConfigError(f"num_frames must be a positive integer, got {num_frames!r}")
        if not _is_int(seed) or seed < 0:
            raise ConfigError(f"the Shapes clip seed must be a non-negative integer, got {seed!r}")
        if not isinstance(split, str) or not split:
            raise ConfigError(f"split must be a non-empty string such as 'train' or 'val', got {split!r}")
        if num_clips is not None and (not _is_int(num_clips) or num_clips < 1):
            raise ConfigError(f"num_clips must be a positive integer or None, got {num_clips!r}")
        strides = tuple(strides)
        if not strides or not all(_is_int(s) and s >= 1 for s in strides):
            raise ConfigError(f"strides must be a non-empty list of positive integers, got {list(strides)}")
        self.num_frames = int(num_frames)
        self.seed = int(seed)
        self.split = split
        self.num_clips = None if num_clips is None else int(num_clips)
        self.strides = tuple(int(s) for s in strides)
        # crc32, unlike hash(), is the same in every process, so workers and reruns agree.
        self._split_key = zlib.crc32(split.encode("utf-8"))

    def __len__(self) -> int:
        return UNBOUNDED_CLIPS if self.num_clips is None else self.num_clips

    def __getitem__(self, sample_id: int) -> dict[str, torch.Tensor]:
        if not _is_int(sample_id):
            raise InputError(f"a Shapes clip id must be an integer, got {type(sample_id).__name__}")
        sample_id = int(sample_id)
        # IndexError (not InputError) so that `for clip in dataset` stops at the end.
        if sample_id < 0 or (self.num_clips is not None and sample_id >= self.num_clips):
            raise IndexError(f"clip id {sample_id} is outside [0, {len(self)})")
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self._split_key, sample_id])))
        return self._simulate(rng)

    def _simulate(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        config = self.config
        count, size = self.num_frames, config.frame_size
        stride = int(self.strides[rng.integers(len(self.strides))])
        world = ShapesWorld(config, rng)

        frames = np.empty((count, size, size, 3), dtype=np.uint8)
        segmentation = np.empty((count, size, size), dtype=np.uint8)
        depth = np.empty((count, size, size), dtype=np.float32)
        actions = np.zeros((count, 2), dtype=np.float32)

        # Exact OU update over one clip interval: mean-reverting, stationary std = policy_std.
        decay = math.exp(-stride / config.fps / config.policy_timescale)
        innovation = config.policy_std * math.sqrt(1.0 - decay * decay)
        latent = config.policy_std * rng.standard_normal(2)
        world.render_into(frames[0], segmentation[0], depth[0])
        for t in range(1, count):
            latent = decay * latent + innovation * rng.standard_normal(2)
            action = np.clip(latent, -1.0, 1.0)
            for _ in range(stride):
                world.step(action)
            actions[t] = action
            world.render_into(frames[t], segmentation[t], depth[t])

        return {
            "frames": torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(),
            "timestamps": torch.arange(count, dtype=torch.float64).mul_(stride / config.fps).float(),
            "actions": torch.from_numpy(actions),
            "segmentation": torch.from_numpy(segmentation).long(),
            "depth": torch.from_numpy(depth),
        }
