"""Collection policies: what acts while `envs.recording` records episodes for training and goal reaching.

What a world model can learn, and which goals a task set holds, depends on the data: uniform random actions
leave a pendulum near its free swing and rarely move PushT's block. Built in, by `record.policy` name:

- `random`: a uniform action from the action space every step (Box or Discrete).
- `smooth`: Ornstein-Uhlenbeck noise in a Box, so the action drifts instead of flickering and its effect adds
  up (a pendulum is pumped beyond its free swing). Keyword `correlation_steps` (default 10): the steps over
  which an action forgets its past; `scale` (default 1): the noise's standard deviation in half-ranges of the
  box (the action is clipped into it).
- `pusht_near_block`: PushT (gym-pusht's `PushT-v0` with `obs_type: state`): a target a uniform step of up to
  `step` px (default 100) from the agent, kept within `radius` px (default 100) of the block, so the agent
  keeps touching the block (stable-worldmodel's `WeakPolicy` does the same for its PushT).

Or `package.module:factory` for a policy of one's own. A factory takes the action space and the
`record.policy_kwargs` as keywords and returns a policy: a callable `(observation, rng) -> action`, optionally
with `reset(rng)`, which recording calls at the start of every episode. Every draw comes from `rng`, the
recording's seeded generator, so a seed fixes the whole dataset.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
from gymnasium import spaces

from tokenizer.runtime.errors import ConfigError

Policy = Callable[[Any, np.random.Generator], Any]  # (observation, rng) -> action


def random_policy(space: spaces.Space) -> Policy:
    """Uniform actions drawn from the recording's generator."""
    if isinstance(space, spaces.Discrete):
        return lambda obs, rng: int(space.start + rng.integers(space.n))
    if isinstance(space, spaces.Box) and space.is_bounded():
        return lambda obs, rng: rng.uniform(space.low, space.high).astype(space.dtype)
    raise ConfigError(f"the random policy needs a bounded Box or a Discrete action space, got {space}")


def bounded_box(space: spaces.Space, policy: str) -> spaces.Box:
    if not (isinstance(space, spaces.Box) and space.is_bounded()):
        raise ConfigError(f"the {policy} policy needs a bounded Box action space, got {space}")
    return space


class SmoothPolicy:
    """Ornstein-Uhlenbeck actions in a Box: x <- a x + sqrt(1 - a^2) n with a = exp(-1 / correlation_steps) and n
    standard normal, so x stays standard normal; action = centre + scale * half-range * x, clipped into the box."""

    def __init__(self, space: spaces.Space, correlation_steps: float = 10.0, scale: float = 1.0):
        self.space = bounded_box(space, "smooth")
        if not (correlation_steps > 0 and scale > 0):
            raise ConfigError(
                f"record.policy_kwargs: correlation_steps ({correlation_steps}) and scale ({scale}) must be positive"
            )
        self.decay = float(np.exp(-1.0 / correlation_steps))
        low, high = self.space.low.astype(np.float64), self.space.high.astype(np.float64)
        self.centre, self.half = (low + high) / 2, scale * (high - low) / 2
        self.state = np.zeros(self.space.shape)

    def reset(self, rng: np.random.Generator) -> None:
        """A new episode starts from the stationary distribution, not from the last episode's drift."""
        self.state = rng.standard_normal(self.space.shape)

    def __call__(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        noise = rng.standard_normal(self.space.shape)
        self.state = self.decay * self.state + np.sqrt(1 - self.decay**2) * noise
        action = np.clip(self.centre + self.half * self.state, self.space.low, self.space.high)
        return action.astype(self.space.dtype)


class PushTNearBlock:
    """PushT's absolute target actions, drawn near the block: agent + uniform(-step, step)^2, clipped to the block's
    position +- radius and to the action box. Reads the state observation (agent x, y, block x, y, angle)."""

    def __init__(self, space: spaces.Space, step: float = 100.0, radius: float = 100.0):
        self.space = bounded_box(space, "pusht_near_block")
        if self.space.shape != (2,) or not (step > 0 and radius > 0):
            raise ConfigError(
                f"pusht_near_block needs PushT's 2-D target actions and positive step ({step}) and radius ({radius}), "
                f"got actions {self.space}"
            )
        self.step, self.radius = step, radius

    def __call__(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        state = np.asarray(obs, dtype=np.float64).reshape(-1)
        if state.shape != (5,):
            raise ConfigError(
                "pusht_near_block reads PushT's state observation (agent x, y, block x, y, angle): make the env with "
                f"env_kwargs {{obs_type: state}} (got an observation of shape {np.shape(obs)})"
            )
        agent, block = state[:2], state[2:4]
        target = np.clip(agent + rng.uniform(-self.step, self.step, 2), block - self.radius, block + self.radius)
        return np.clip(target, self.space.low, self.space.high).astype(self.space.dtype)


POLICIES: dict[str, Callable[..., Policy]] = {
    "random": random_policy,
    "smooth": SmoothPolicy,
    "pusht_near_block": PushTNearBlock,
}


def load_policy(spec: str, space: spaces.Space, kwargs: dict[str, Any] | None = None) -> Policy:
    """A built-in policy's name (`POLICIES`) or "package.module:factory", made for `space` with `kwargs`."""
    if spec in POLICIES:
        factory = POLICIES[spec]
    else:
        module_name, _, attr = spec.partition(":")
        if not attr:
            raise ConfigError(
                f"record.policy must be one of {', '.join(POLICIES)} or 'package.module:factory', got {spec!r}"
            )
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ConfigError(f"cannot load policy {spec!r}: {err}") from None
    try:
        inspect.signature(factory).bind(space, **(kwargs or {}))
    except TypeError as err:
        raise ConfigError(f"policy {spec!r} does not take record.policy_kwargs {dict(kwargs or {})}: {err}") from None
    return factory(space, **(kwargs or {}))
