"""Record Gymnasium episodes into the dataset the world-model training reads (`data.source=episodes`).

    python -m envs.recording --env deltaworld/Shapes-v0 --episodes 200 --out runs/shapes_episodes
    python -m envs.recording --env Pendulum-v1 --episodes 20 --frame-size 64 --out runs/pendulum_episodes
    python -m envs.recording --env gym_pusht:gym_pusht/PushT-v0 --out runs/pusht_episodes 'env_kwargs={obs_type: state}'

Any env made with render_mode="rgb_array" works; frames come from `env.render()`. What acts is `--policy`
(`envs.policies`: uniform `random`, Ornstein-Uhlenbeck `smooth`, PushT's `pusht_near_block`, or a
`package.module:factory` of one's own, with `policy_kwargs`).
A folder holds one `episode_NNNNNN.safetensors` per episode with
  "frames"      uint8 (T, 3, H, W), the reset frame first
  "actions"     float32 (T, A); actions[t] led into frame t, actions[0] = 0
                (a Discrete action is one column holding its index)
  "timestamps"  float64 (T,) seconds since reset
  "seed"        int64 (1,), the seed the episode was reset with
  "states"      float64 (T, S), the simulator's state after each frame: the observation when it is a
                vector, else the `info` entry `state_key` names (e.g. Shapes-v0's "agent_position");
                absent when there is neither
and the env id, its make() keyword arguments, the policy and its keywords (JSON) and the state's source in
the file's metadata.
`tokenizer.data.episodes.EpisodeClips` cuts training clips from them; the seed and the states are what
`envs.goal_reaching` needs to reach a recorded state again (reset with the seed, replay the actions)
and to score an agent against a recorded goal state.
Like every command it also takes `--config FILE` and dotted overrides (`max_steps=40`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

import envs  # noqa: F401  (registers deltaworld/* so --env can name them)
from envs.policies import Policy, load_policy
from envs.wrappers import is_image_space
from tokenizer.data.episodes import episode_path
from tokenizer.data.transforms import center_square_box, resize_frames, to_channels_first
from tokenizer.runtime.cli import Flag, parse_run_config, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.errors import ConfigError, InputError
from tokenizer.runtime.files import save_safetensors
from tokenizer.runtime.run_folder import check_output_folder, staged_output_folder


def action_vector(space: spaces.Space) -> Callable[[Any], np.ndarray]:
    """How an action of `space` is stored: Box -> its flat values, Discrete -> its index in one column."""
    if isinstance(space, spaces.Box):
        return lambda action: np.asarray(action, dtype=np.float32).reshape(-1)
    if isinstance(space, spaces.Discrete):
        return lambda action: np.array([int(action)], dtype=np.float32)
    raise ConfigError(f"recording supports Box and Discrete action spaces, not {type(space).__name__}")


def headless_rendering() -> None:
    """For the project's commands, which render frames to arrays and never open a window: SDL's dummy video driver
    (unless one is set) keeps pygame-drawn envs (Gymnasium's classic control, PushT) from probing for a display and
    printing SDL's "XDG_RUNTIME_DIR is invalid". Library calls leave the user's environment alone."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")


def frame_interval(env: gymnasium.Env) -> float:
    """Seconds between two steps: the simulator's `dt` where it has one, else 1 / render_fps."""
    dt = getattr(env.unwrapped, "dt", None)
    if dt:
        return float(dt)
    fps = env.metadata.get("render_fps")
    if not fps:
        raise ConfigError("the env declares neither a `dt` nor metadata['render_fps'], so frames cannot be timed")
    return 1.0 / float(fps)


def square_frames(frames: np.ndarray, size: int | None) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, size, size): centre square crop, then resize; size None keeps the crop."""
    top, left, side, _ = center_square_box(frames.shape[1], frames.shape[2])
    frames = to_channels_first(frames[:, top : top + side, left : left + side])
    return frames.contiguous() if size is None else resize_frames(frames, size, size)


def has_vector_state(env: gymnasium.Env) -> bool:
    """Whether the observation itself is the state: a numeric Box that is not an image."""
    space = env.observation_space
    return isinstance(space, spaces.Box) and not is_image_space(space) and np.issubdtype(space.dtype, np.number)


def state_vector(env: gymnasium.Env, obs: Any, info: dict[str, Any], state_key: str | None = None) -> np.ndarray | None:
    """The state to store and compare after a step: info[state_key] when a key is given, else the observation
    when it is a vector (`has_vector_state`), else None (the episode is recorded without states)."""
    if state_key is not None:
        if state_key not in info:
            raise ConfigError(
                f"state_key {state_key!r} is not in this env's info (it has: {', '.join(sorted(info)) or 'nothing'})"
            )
        return np.asarray(info[state_key], dtype=np.float64).reshape(-1).copy()
    if has_vector_state(env):
        return np.asarray(obs, dtype=np.float64).reshape(-1).copy()
    return None


def record_episode(
    env: gymnasium.Env,
    policy: Policy,
    rng: np.random.Generator,
    seed: int,
    max_steps: int,
    frame_size: int | None,
    state_key: str | None = None,
) -> dict[str, torch.Tensor]:
    """Run one episode from reset(seed) until it ends or reaches `max_steps` steps; -> the episode's tensors."""
    store = action_vector(env.action_space)
    obs, info = env.reset(seed=seed)
    if hasattr(policy, "reset"):
        policy.reset(rng)
    frames, actions = [env.render()], [np.zeros_like(store(env.action_space.sample()))]
    states = [state_vector(env, obs, info, state_key)]
    for _ in range(max_steps):
        action = policy(obs, rng)
        obs, _, terminated, truncated, info = env.step(action)
        frames.append(env.render())
        actions.append(store(action))
        states.append(state_vector(env, obs, info, state_key))
        if terminated or truncated:
            break
    stacked = np.stack(frames)
    if stacked.ndim != 4 or stacked.shape[-1] != 3 or stacked.dtype != np.uint8:
        raise InputError(
            f"env.render() must return (H, W, 3) uint8 frames (render_mode='rgb_array'), got {stacked.dtype} "
            f"{stacked.shape[1:]}"
        )
    episode = {
        "frames": square_frames(stacked, frame_size),
        "actions": torch.from_numpy(np.stack(actions)),
        "timestamps": torch.arange(len(frames), dtype=torch.float64) * frame_interval(env),
        "seed": torch.tensor([seed], dtype=torch.int64),
    }
    if states[0] is not None:
        episode["states"] = torch.from_numpy(np.stack(states))
    return episode


def record(
    env_id: str,
    episodes: int,
    out: str | Path,
    policy: str = "random",
    seed: int = 0,
    max_steps: int = 100,
    frame_size: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    state_key: str | None = None,
    policy_kwargs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Record `episodes` episodes of `env_id` into `out`: a new or empty folder, or with `overwrite` any folder,
    which then holds only these episodes. They are written beside it and swapped in when all are recorded.

    Episode i is reset with seed `seed * 1_000_003 + i`, stored in its file with the states (`state_vector`)."""
    if episodes < 1 or max_steps < 1:
        raise ConfigError(f"--episodes ({episodes}) and --max-steps ({max_steps}) must both be at least 1")
    if frame_size is not None and (frame_size < 8 or frame_size % 8):
        raise ConfigError(
            f"frame_size must be a positive multiple of 8, or null to keep the env's size, got {frame_size}"
        )
    out = Path(out)
    check_output_folder(out, overwrite, "out", "a recording")
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array", **(env_kwargs or {}))
    except (gymnasium.error.Error, ImportError) as err:  # ImportError: the module of a "module:Env-v0" id
        raise ConfigError(f"cannot make env {env_id!r}: {err}") from None
    act = load_policy(policy, env.action_space, policy_kwargs)
    rng = np.random.default_rng(seed)
    paths = []
    # Keyword values JSON cannot hold (a config object) are kept as their repr: a record, not a recipe.
    metadata = {
        "env_id": env_id,
        "policy": policy,
        "policy_kwargs": json.dumps(policy_kwargs or {}, default=repr),
        "env_kwargs": json.dumps(env_kwargs or {}, default=repr),
    }
    if state_key is not None:  # metadata values are strings: no entry means the observation
        metadata["state_key"] = state_key
    with env, staged_output_folder(out, overwrite, "out", "a recording") as stage:
        for index in range(episodes):
            try:
                episode = record_episode(env, act, rng, seed * 1_000_003 + index, max_steps, frame_size, state_key)
            except gymnasium.error.DependencyNotInstalled as err:
                # Gymnasium's classic-control and Box2D envs draw with pygame, which is not a dependency of ours.
                raise ConfigError(
                    f"{env_id} cannot render here ({err}); install the extra: pip install -e '.[gym-render]'"
                ) from None
            save_safetensors(episode, episode_path(stage, index), metadata=metadata)
            paths.append(episode_path(out, index))
    return paths


@dataclass
class RecordConfig:
    env: str = "deltaworld/Shapes-v0"  # Gymnasium env id, e.g. deltaworld/Shapes-v0 or Pendulum-v1
    episodes: int = 100
    out: str = "runs/episodes"  # folder for the episode files
    overwrite: bool = False  # replace what `out` holds (it then holds only the new episodes)
    # random, smooth, pusht_near_block (envs.policies) or "package.module:factory" (factory(action_space, **kwargs)
    # -> policy(obs, rng))
    policy: str = "random"
    policy_kwargs: dict[str, Any] = field(default_factory=dict)  # keywords of the policy's factory
    seed: int = 0
    max_steps: int = 100  # steps per episode at most (the env may end it sooner)
    frame_size: int | None = None  # store square frames of this size (null = the env's own, centre-cropped)
    state_key: str | None = None  # info entry stored as the state (null = the observation, when it is a vector)
    env_kwargs: dict[str, Any] = field(
        default_factory=dict
    )  # keyword arguments of gymnasium.make, e.g. {obs_type: state}


FLAGS = {
    "--env": Flag("env", "Gymnasium env id"),
    "--episodes": Flag("episodes", "episodes to record", int),
    "--out": Flag("out", "folder for the episode files"),
    "--overwrite": Flag("overwrite", "replace what the folder holds", bool),
    "--policy": Flag("policy", "random, smooth, pusht_near_block, or package.module:factory"),
    "--seed": Flag("seed", "seed of the episodes and the policy", int),
    "--max-steps": Flag("max_steps", "steps per episode at most", int),
    "--frame-size": Flag("frame_size", "square frame size (default: the env's own)", int),
    "--state-key": Flag("state_key", "info entry stored as the state (default: the observation vector)"),
}


def main(argv: list[str] | None = None) -> None:
    headless_rendering()
    cfg = to_object(
        parse_run_config(RecordConfig, __doc__, "a YAML with env: and episodes:", argv, FLAGS, default_config=None)
    )
    paths = record(
        cfg.env,
        cfg.episodes,
        cfg.out,
        cfg.policy,
        cfg.seed,
        cfg.max_steps,
        cfg.frame_size,
        dict(cfg.env_kwargs),
        cfg.state_key,
        dict(cfg.policy_kwargs),
        cfg.overwrite,
    )
    print(f"recorded {len(paths)} episodes of {cfg.env} into {cfg.out}")


if __name__ == "__main__":
    run_cli(main)
