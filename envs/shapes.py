"""`deltaworld/Shapes-v0`: reach a goal position in the Shapes world with a continuous 2-D velocity.

The world itself (simulator, rendering, seeded clips) is `tokenizer.data.shapes`;
this module adds the Gymnasium API, the goal and the reward. `import envs` registers it.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from tokenizer.data.shapes import SPAWN_MARGIN, ShapesConfig, ShapesFrame, ShapesWorld, check_config
from tokenizer.runtime.errors import ConfigError, InputError


class ShapesEnv(gymnasium.Env):
    """Drive the agent to a goal position in the Shapes world.

    Observation: (S, S, 3) uint8 RGB. Action: (2,) float32 velocity in [-1, 1]^2.
    Reward: minus the agent-goal distance (arena units). Never terminates or
    truncates by itself; `gymnasium.make` adds the time limit. `info` holds
    "segmentation" (S, S) int64, "depth" (S, S) float32, "agent_position" (2,),
    "goal" (2,), "distance", "success" (distance < success_radius) and
    "timestamp" (seconds since reset).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, config: ShapesConfig | None = None, render_mode: str | None = "rgb_array"):
        """config: the world (default ShapesConfig()); render_mode: "rgb_array" or None, render() returns the frame
        either way."""
        self.config = check_config(ShapesConfig() if config is None else config)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ConfigError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": self.config.fps}
        size = self.config.frame_size
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._world: ShapesWorld | None = None
        self._goal = np.zeros(2)

    @property
    def world(self) -> ShapesWorld:
        """The live simulator behind the env (after reset)."""
        if self._world is None:
            raise gymnasium.error.ResetNeeded("call reset() before using the Shapes env")
        return self._world

    @property
    def goal(self) -> np.ndarray:
        """(2,) float64 copy of the goal position."""
        return self._goal.copy()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw a new scene and goal; options={"goal": (x, y)} in [0, 1]^2 fixes the goal."""
        super().reset(seed=seed)
        self._world = ShapesWorld(self.config, self.np_random)
        # The goal is always drawn, so a given seed yields the same scene with or without options["goal"].
        self._goal = self.np_random.uniform(SPAWN_MARGIN, 1.0 - SPAWN_MARGIN, size=2)
        if options is not None and "goal" in options:
            self._goal = _check_goal(options["goal"])
        frame = self._world.render()
        return frame.rgb, self._info(frame)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply a (2,) velocity action for 1 / fps seconds."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,) or not np.all(np.isfinite(action)):
            raise InputError(f"a Shapes action must be 2 finite numbers (vx, vy) in [-1, 1], got shape {action.shape}")
        self.world.step(action)
        frame = self._world.render()
        info = self._info(frame)
        return frame.rgb, -info["distance"], False, False, info

    def render(self) -> np.ndarray:
        """(S, S, 3) uint8 RGB of the current scene."""
        return self.world.render().rgb

    def goal_frame(self) -> np.ndarray:
        """(S, S, 3) uint8 RGB of the current scene with the agent drawn at the goal: the planner's goal image."""
        return self.world.render(agent_position=self._goal).rgb

    def _info(self, frame: ShapesFrame) -> dict[str, Any]:
        agent = self._world.agent_position
        distance = float(np.linalg.norm(agent - self._goal))
        return {
            "segmentation": frame.segmentation.astype(np.int64),
            "depth": frame.depth,
            "agent_position": agent,
            "goal": self._goal.copy(),
            "distance": distance,
            "success": distance < self.config.success_radius,
            "timestamp": self._world.time,
        }


def _check_goal(goal: Any) -> np.ndarray:
    goal = np.asarray(goal, dtype=np.float64)
    if goal.shape != (2,) or not np.all((goal >= 0.0) & (goal <= 1.0)):
        raise InputError(f"options['goal'] must be (x, y) with both in [0, 1], got {goal.tolist()}")
    return goal.copy()
