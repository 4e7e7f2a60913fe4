"""Record Gymnasium episodes into the dataset the world-model training reads (`data.source=episodes`).

    python -m envs.recording --env deltaworld/Shapes-v0 --episodes 200 --out runs/shapes_episodes
    python -m envs.recording --env Pendulum-v1 --episodes 20 --frame-size 64 --out runs/pendulum_episodes

Any env made with render_mode="rgb_array" works; frames come from `env.render()`.
A folder holds one `episode_NNNNNN.safetensors` per episode with
  "frames"      uint8 (T, 3, H, W), the reset frame first
  "actions"     float32 (T, A); actions[t] led into frame t, actions[0] = 0
                (a Discrete action is one column holding its index)
  "timestamps"  float64 (T,) seconds since reset
and the env id in the file's metadata. `EpisodeClips` cuts training clips from them.
"""

from __future__ import annotations

import argparse
import importlib
import zlib
from pathlib import Path
from typing import Any, Callable

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from safetensors import safe_open

import envs  # noqa: F401  (registers deltaworld/* so --env can name them)
from tokenizer.checkpoint import load_weights, save_safetensors
from tokenizer.cli import run_cli
from tokenizer.data.transforms import center_square_box, resize_frames, to_channels_first
from tokenizer.errors import ConfigError, DataError, InputError

EPISODE_GLOB = "episode_*.safetensors"
UNBOUNDED_CLIPS = 2**31 - 1

Policy = Callable[[Any, np.random.Generator], Any]  # (observation, rng) -> action


def action_vector(space: spaces.Space) -> Callable[[Any], np.ndarray]:
    """How an action of `space` is stored: Box -> its flat values, Discrete -> its index in one column."""
    if isinstance(space, spaces.Box):
        return lambda action: np.asarray(action, dtype=np.float32).reshape(-1)
    if isinstance(space, spaces.Discrete):
        return lambda action: np.array([int(action)], dtype=np.float32)
    raise ConfigError(f"recording supports Box and Discrete action spaces, not {type(space).__name__}")


def random_policy(space: spaces.Space) -> Policy:
    """Uniform actions drawn from the recording's generator, so a seed fixes the whole dataset."""
    if isinstance(space, spaces.Discrete):
        return lambda obs, rng: int(space.start + rng.integers(space.n))
    if isinstance(space, spaces.Box) and space.is_bounded():
        return lambda obs, rng: rng.uniform(space.low, space.high).astype(space.dtype)
    raise ConfigError(f"the random policy needs a bounded Box or a Discrete action space, got {space}")


def load_policy(spec: str, space: spaces.Space) -> Policy:
    """"random", or "package.module:factory" where factory(action_space) returns a Policy."""
    if spec == "random":
        return random_policy(space)
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ConfigError(f"--policy must be 'random' or 'package.module:factory', got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"cannot load policy {spec!r}: {err}") from None
    return factory(space)


def frame_interval(env: gymnasium.Env) -> float:
    """Seconds between two steps: the simulator's `dt` where it has one, else 1 / render_fps."""
    dt = getattr(env.unwrapped, "dt", None)
    if dt:
        return float(dt)
    fps = env.metadata.get("render_fps")
    if not fps:
        raise ConfigError("the env declares neither a `dt` nor metadata['render_fps'], so frames cannot be timed")
    return 1.0 / float(fps)


def square_frames(frames: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, size, size): centre square crop, then resize; size 0 keeps the crop."""
    top, left, side, _ = center_square_box(frames.shape[1], frames.shape[2])
    frames = to_channels_first(frames[:, top : top + side, left : left + side])
    return resize_frames(frames, size, size) if size else frames.contiguous()


def record_episode(env: gymnasium.Env, policy: Policy, rng: np.random.Generator, seed: int, max_steps: int, frame_size: int) -> dict[str, torch.Tensor]:
    """Run one episode from reset(seed) until it ends or reaches `max_steps` steps; -> the episode's tensors."""
    store = action_vector(env.action_space)
    obs, _ = env.reset(seed=seed)
    frames, actions = [env.render()], [np.zeros_like(store(env.action_space.sample()))]
    for _ in range(max_steps):
        action = policy(obs, rng)
        obs, _, terminated, truncated, _ = env.step(action)
        frames.append(env.render())
        actions.append(store(action))
        if terminated or truncated:
            break
    stacked = np.stack(frames)
    if stacked.ndim != 4 or stacked.shape[-1] != 3 or stacked.dtype != np.uint8:
        raise InputError(f"env.render() must return (H, W, 3) uint8 frames (render_mode='rgb_array'), got {stacked.dtype} {stacked.shape[1:]}")
    return {
        "frames": square_frames(stacked, frame_size),
        "actions": torch.from_numpy(np.stack(actions)),
        "timestamps": torch.arange(len(frames), dtype=torch.float64) * frame_interval(env),
    }


def record(
    env_id: str,
    episodes: int,
    out: str | Path,
    policy: str = "random",
    seed: int = 0,
    max_steps: int = 100,
    frame_size: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> list[Path]:
    """Record `episodes` episodes of `env_id` into `out` (created; existing episode files are replaced)."""
    if episodes < 1 or max_steps < 1:
        raise ConfigError(f"--episodes ({episodes}) and --max-steps ({max_steps}) must both be at least 1")
    if frame_size < 0 or frame_size % 8:
        raise ConfigError(f"--frame-size must be 0 (keep the env's size) or a positive multiple of 8, got {frame_size}")
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array", **(env_kwargs or {}))
    except gymnasium.error.Error as err:
        raise ConfigError(f"cannot make env {env_id!r}: {err}") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    act = load_policy(policy, env.action_space)
    rng = np.random.default_rng(seed)
    paths = []
    with env:
        for index in range(episodes):
            try:
                episode = record_episode(env, act, rng, seed * 1_000_003 + index, max_steps, frame_size)
            except gymnasium.error.DependencyNotInstalled as err:
                # Gymnasium's classic-control and Box2D envs draw with pygame, which is not a dependency of ours.
                raise ConfigError(f"{env_id} cannot render here ({err}); install the extra: pip install -e '.[gym-render]'") from None
            path = out / f"episode_{index:06d}.safetensors"
            save_safetensors(episode, path, metadata={"env_id": env_id, "policy": policy})
            paths.append(path)
    return paths


def episode_files(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"episode folder {root} does not exist; record one with `python -m envs.recording --out {root}`")
    files = sorted(root.glob(EPISODE_GLOB))
    if not files:
        raise DataError(f"{root} holds no {EPISODE_GLOB} files; record some with `python -m envs.recording --out {root}`")
    return files


def episode_length(path: Path) -> int:
    with safe_open(str(path), framework="pt") as f:
        return f.get_slice("timestamps").get_shape()[0]


class EpisodeClips(torch.utils.data.Dataset):
    """Clips of `num_frames` consecutive frames cut from recorded episodes, resized to `frame_size`.

    Every tenth episode (at least one, when there are two or more) is held out for
    validation. "train" is unbounded and clip id i is a window drawn from
    (seed, i); the validation set is the first window of each held-out episode,
    then the next windows, up to `num_clips`. Clips follow the project's clip dict:
    frames uint8 (T, 3, S, S), timestamps float32 (T,) from 0, actions float32 (T, A)
    where actions[t] leads into frame t (actions[0] is the action into the clip's first frame).
    """

    def __init__(self, root: str | Path, num_frames: int, frame_size: int, seed: int, split: str = "train", num_clips: int | None = None):
        files = episode_files(root)
        held_out = [p for i, p in enumerate(files) if i % 10 == 9] or files[-1:]
        chosen = ([p for p in files if p not in held_out] or files) if split == "train" else held_out
        lengths = [episode_length(p) for p in chosen]
        self.episodes = [(p, n) for p, n in zip(chosen, lengths) if n >= num_frames]
        if not self.episodes:
            raise DataError(f"no {split} episode in {root} has the {num_frames} frames a clip needs (longest: {max(lengths)})")
        self.num_frames, self.frame_size, self.seed, self.train = num_frames, frame_size, seed, split == "train"
        self._split_key = zlib.crc32(split.encode("utf-8"))
        self._windows = None if self.train else self._val_windows(num_clips)
        self._cache: dict[Path, dict[str, torch.Tensor]] = {}

    def _val_windows(self, num_clips: int | None) -> list[tuple[int, int]]:
        windows = [(e, start) for e, (_, n) in enumerate(self.episodes) for start in range(0, n - self.num_frames + 1, self.num_frames)]
        windows.sort(key=lambda w: (w[1], w[0]))
        return windows[:num_clips] if num_clips else windows

    def __len__(self) -> int:
        return UNBOUNDED_CLIPS if self._windows is None else len(self._windows)

    def __getitem__(self, sample_id: int) -> dict[str, torch.Tensor]:
        if sample_id < 0 or sample_id >= len(self):
            raise IndexError(f"clip id {sample_id} is outside [0, {len(self)})")
        if self._windows is None:
            rng = np.random.default_rng([self.seed, self._split_key, int(sample_id)])
            index = int(rng.integers(len(self.episodes)))
            start = int(rng.integers(self.episodes[index][1] - self.num_frames + 1))
        else:
            index, start = self._windows[sample_id]
        episode = self._load(self.episodes[index][0])
        window = slice(start, start + self.num_frames)
        times = episode["timestamps"][window]
        return {
            "frames": resize_frames(episode["frames"][window], self.frame_size, self.frame_size),
            "timestamps": (times - times[0]).float(),
            "actions": episode["actions"][window].float(),
        }

    def _load(self, path: Path) -> dict[str, torch.Tensor]:
        # Episodes are small (a 64-pixel, 100-step episode is 1.2 MB) and re-read for every clip otherwise.
        if path not in self._cache:
            episode = load_weights(path, f"episode file {path}")
            missing = {"frames", "actions", "timestamps"} - set(episode)
            if missing:
                raise DataError(f"episode file {path} lacks {', '.join(sorted(missing))}")
            self._cache[path] = episode
        return self._cache[path]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", required=True, help="Gymnasium env id, e.g. deltaworld/Shapes-v0 or Pendulum-v1")
    parser.add_argument("--episodes", type=int, required=True)
    parser.add_argument("--out", required=True, help="folder for the episode files")
    parser.add_argument("--policy", default="random", help="'random' (uniform) or 'package.module:factory' (factory(action_space) -> policy(obs, rng))")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=100, help="steps per episode at most (the env may end it sooner)")
    parser.add_argument("--frame-size", type=int, default=0, help="store square frames of this size (0 = the env's own, centre-cropped)")
    args = parser.parse_args(argv)
    paths = record(args.env, args.episodes, args.out, args.policy, args.seed, args.max_steps, args.frame_size)
    print(f"recorded {len(paths)} episodes of {args.env} into {args.out}")


if __name__ == "__main__":
    run_cli(main)
