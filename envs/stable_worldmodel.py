"""DeltaWorld inside stable-worldmodel (galilai-group/stable-worldmodel 0.1.1), the field's planning harness.

- `DeltaWorldCost`: the cost model its solvers plan with. `get_cost(info_dict, action_candidates) -> (B, S)`
  imagines every candidate action sequence in a DeltaWorld (or DINOWorld) model and scores it against the goal
  image with the token cost (the readout's summaries, nothing decoded) or the feature cost, so
  `swm.policy.WorldModelPolicy(solver=swm.solver.CEMSolver(cost), config=swm.PlanConfig(...))` plans with it
  in their `World`. The sampling solvers work: CEMSolver, ICEMSolver, MPPISolver, PredictiveSamplingSolver.
  The gradient ones (GradientSolver, PGDSolver, LagrangianSolver) need a cost differentiable in the actions, and
  DeltaWorld's imagination runs without gradients (its samplers draw under no_grad): they are refused in one line.
- `convert_dataset`: the episodes `World.collect` writes (folder and lance, both checked; any other format whose
  `load_dataset` reader lists `lengths` and has `load_episode`) as episode files of ours, blocked as the plan
  bench blocks its recordings, so the tokenizer, the token cache and `train_world_model.py`
  (data.source=episodes) train on them:

    python -m envs.stable_worldmodel convert --dataset DIR --env swm/PushT-v1 --action-repeat 5 --out runs/pusht_swm

Only `convert_dataset` imports stable_worldmodel (to read their formats and make their envs), inside the function:
the cost model needs torch and our models alone, and the rest of the project never imports the harness.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import torch
from torch import nn

from envs.goal_reaching import ActionBlocks, block_episode
from envs.goals import COST_KINDS, check_cost_blur, goal_cost_of_features
from envs.planners import COST_STEPS, sequence_costs
from envs.recording import square_frames
from tokenizer.data.episodes import episode_path
from tokenizer.runtime.cli import Flag, parse_run_config, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.errors import ConfigError, DataError, InputError
from tokenizer.runtime.files import save_safetensors
from tokenizer.runtime.run_folder import check_output_folder, staged_output_folder
from worldmodel.world import WorldModel

# Where get_cost keeps what it computed once per solve in the solver's info dict (which the solver hands to every
# get_cost call of one solve): the dream the context frames start, and the goal's step cost. stable-worldmodel's own
# models cache their goal embedding in the same dict the same way.
START_KEY = "deltaworld_start"
# Seconds per env step of swm/PushT-v1 and swm/TwoRoom-v1 (both step at 10 Hz, metadata["render_fps"]).
SWM_STEP_SECONDS = 0.1
INSTALL_HINT = (
    "install the swm extra: make swm-install (builds .venv-swm), or pip install -e '.[swm]' beside torch 2.14.1 and "
    "torchvision 0.29.1"
)


class BoxClip:
    """stable-worldmodel's `Transformable` for actions (`WorldModelPolicy(process={"action": BoxClip(space)})`):
    plans clipped into the env's action box on their way to the env, as `DeltaWorldCost` scored them. Their CEM and
    MPPI refit unbounded Gaussians, so a plan's mean can leave the box; actions coming in are left as they are."""

    def __init__(self, action_space: Any):
        self.low, self.high = np.asarray(action_space.low), np.asarray(action_space.high)

    def transform(self, actions: np.ndarray) -> np.ndarray:
        return actions

    def inverse_transform(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(actions, self.low, self.high)


class DeltaWorldCost(nn.Module):
    """A world model as stable-worldmodel's cost model: `get_cost(info_dict, action_candidates) -> (B, S)`.

    `action_space`: one env's Box (`World.envs.single_action_space`); candidates come in its units, as their
    solvers sample them, in blocks of `PlanConfig.action_block` env actions, (B, S, horizon, action_block * A). Each
    block becomes one world-model action as `envs.goal_reaching.ActionBlocks` makes them for training (every env
    action scaled from the box to [-1, 1], clipped: the model never saw an action outside the box), so the world
    model must take action_block * A-D actions and have been trained on frames one block apart: `dt` is the seconds
    between them (action_block x the seconds per env step the data was converted with, `convert_dataset`).

    From `info_dict` it reads "pixels" (B, S, T, H, W, 3) uint8, the T context frames (0.1.1's `World` passes the
    newest one; they are taken `dt` apart) and "goal" (B, S, 1, H, W, 3) uint8, the goal image: both as the harness
    makes them (`World(image_shape=...)` at the size the model was trained at), without a pixel `transform`: the
    tokenizer normalises frames itself. The executed actions ("action") are not read: a DeltaWorld history holds the
    context frames' tokens alone, an action conditions only the frame it leads into.

    `cost`: "token" (the readout's summaries of imagined frames against the goal's, nothing decoded), "features"
    (every imagined frame decoded and compared patch by patch) or "auto" (token when the model has a readout).
    `cost_steps`: "all" scores the mean over imagined steps, "last" the final one (DINO-WM's and LeWM's objective).
    `cost_blur`: both maps smoothed by a Gaussian of that std in backbone patches first (envs.goals), 0 for none.
    Every tensor is made on the world model's device; costs return on the candidates' device.
    """

    def __init__(
        self,
        world: WorldModel,
        action_space: Any,
        dt: float,
        cost: str = "auto",
        cost_steps: str = "all",
        seed: int = 0,
        cost_blur: float = 0.0,
    ):
        super().__init__()
        if not world.action_conditioned or not world.config.actions.dim:
            raise ConfigError("planning needs a world model conditioned on continuous actions (model.actions.dim > 0)")
        low, high = np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32)
        if low.ndim != 1 or not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
            raise ConfigError(
                f"the cost model needs a bounded 1-D Box action space with high > low, got {action_space}"
            )
        if world.config.actions.dim % low.shape[0]:
            raise ConfigError(
                f"the world model takes {world.config.actions.dim}-D actions, not a whole number of this env's "
                f"{low.shape[0]}-D actions (model.actions.dim = action_block x the env's action size)"
            )
        if cost not in COST_KINDS or cost_steps not in COST_STEPS:
            raise ConfigError(
                f"cost must be one of {', '.join(COST_KINDS)} and cost_steps one of {', '.join(COST_STEPS)}, got "
                f"{cost!r} and {cost_steps!r}"
            )
        if not dt > 0:
            raise ConfigError(f"dt, the seconds between the model's frames, must be positive, got {dt}")
        self.world = world.eval()
        self.dt, self.cost, self.cost_steps, self.seed = dt, cost, cost_steps, seed
        self.cost_blur = check_cost_blur(cost_blur)
        self.action_block = world.config.actions.dim // low.shape[0]
        # Buffers move with the model (`.to(device)`), so the box is always on the model's device.
        self.register_buffer("low", torch.from_numpy(low), persistent=False)
        self.register_buffer("high", torch.from_numpy(high), persistent=False)
        self._generator: torch.Generator | None = None

    @property
    def device(self) -> torch.device:
        return self.low.device

    def generator(self) -> torch.Generator:
        """The stream of the model's own sampling noise, seeded once, on the model's device (made again, with the
        same seed, if the model moves)."""
        if self._generator is None or self._generator.device != self.device:
            self._generator = torch.Generator(self.device).manual_seed(self.seed)
        return self._generator

    def model_actions(self, candidates: torch.Tensor) -> torch.Tensor:
        """Env actions in blocks (..., action_block * A) -> world-model actions (..., action_block * A) in [-1, 1]."""
        blocks = candidates.to(self.device, torch.float32).unflatten(-1, (self.action_block, -1))
        scaled = 2 * (blocks - self.low) / (self.high - self.low) - 1
        return scaled.clamp(-1, 1).flatten(-2)

    def frames(self, images: Any, key: str) -> torch.Tensor:
        """The harness's images (B, S, T, H, W, 3) uint8 (any S: the copies are the same) -> (B, T, 3, H, W) on the
        model's device."""
        images = images if torch.is_tensor(images) else torch.from_numpy(np.asarray(images))
        if images.dtype != torch.uint8 or images.ndim != 6 or images.shape[-1] != 3:
            raise InputError(
                f"info_dict[{key!r}] must be (B, S, T, H, W, 3) uint8 RGB as stable-worldmodel's World passes it, got "
                f"{images.dtype} {tuple(images.shape)}: pass no `transform` for it (the tokenizer normalises frames)"
            )
        return images[:, 0].permute(0, 1, 4, 2, 3).to(self.device)

    @torch.no_grad()
    def start(self, info_dict: dict, samples: int) -> None:
        """Take in the context frames and the goal once per solve: a dream of B * samples rows (row b * samples + s
        is candidate s of env b, the order of `action_candidates.flatten(0, 1)`) and the goal's step cost."""
        for key in ("pixels", "goal"):
            if key not in info_dict:
                raise InputError(f"info_dict has no {key!r}: DeltaWorldCost plans from the World's pixels and goal")
        context, goal = self.frames(info_dict["pixels"], "pixels"), self.frames(info_dict["goal"], "goal")[:, -1:]
        timestamps = torch.arange(context.shape[1], device=self.device, dtype=torch.float32) * self.dt
        dream = self.world.start(context, timestamps.expand(context.shape[0], -1), samples)
        goal_features = self.world.tokenizer.features(goal)[:, 0].repeat_interleave(samples, 0)
        step_cost = goal_cost_of_features(
            self.world, goal_features, self.world.tokenizer.grid(goal), self.cost, self.cost_blur
        )
        info_dict[START_KEY] = (dream, step_cost)

    def criterion(self, info_dict: dict, action_candidates: torch.Tensor) -> torch.Tensor:
        """The cost (B, S) of each candidate from the dream and goal `start` left in `info_dict`."""
        dream, step_cost = info_dict[START_KEY]
        batch, samples = action_candidates.shape[:2]
        actions = self.model_actions(action_candidates).flatten(0, 1)
        costs = sequence_costs(
            self.world, dream, actions, self.dt, step_cost, self.generator(), last_only=self.cost_steps == "last"
        )
        return costs.view(batch, samples).to(action_candidates.device)

    def get_cost(self, info_dict: dict, action_candidates: torch.Tensor) -> torch.Tensor:
        """Candidates (B, S, horizon, action_block * A) in env units -> costs (B, S), lower is better."""
        if action_candidates.requires_grad and torch.is_grad_enabled():
            raise ConfigError(
                "DeltaWorld imagines without gradients, so gradient solvers cannot plan with it; use CEMSolver, "
                "ICEMSolver, MPPISolver or PredictiveSamplingSolver"
            )
        if action_candidates.ndim != 4 or action_candidates.shape[-1] != self.world.config.actions.dim:
            raise InputError(
                f"action candidates must be (B, S, horizon, {self.world.config.actions.dim}): the model's actions are "
                f"blocks of {self.action_block} env actions (PlanConfig(action_block={self.action_block})), got "
                f"{tuple(action_candidates.shape)}"
            )
        if START_KEY not in info_dict:
            self.start(info_dict, action_candidates.shape[1])
        return self.criterion(info_dict, action_candidates)


def import_stable_worldmodel() -> Any:
    try:
        import stable_worldmodel
    except ImportError as err:
        raise ConfigError(f"stable-worldmodel cannot be imported here ({err}); {INSTALL_HINT}") from None
    return stable_worldmodel


def episode_arrays(episode: dict, index: int, frame_size: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """One episode of a stable-worldmodel dataset -> frames (T, 3, S, S) uint8 and env actions (T, A) float32 in
    our order, actions[t] leading into frame t.

    `World.collect` stores with each step the action taken from its frame (row t: the action from frame t to
    frame t + 1; the last row's is not one the episode took), so ours[t] = theirs[t - 1], and ours[0] = 0 as in our
    recordings (training never reads a clip's first action)."""
    missing = [key for key in ("pixels", "action") if key not in episode]
    if missing:
        raise DataError(f"episode {index} has no {' or '.join(missing)} column: record with World(image_shape=...)")
    pixels = np.asarray(episode["pixels"])
    if pixels.ndim != 4 or pixels.dtype != np.uint8 or 3 not in (pixels.shape[1], pixels.shape[-1]):
        raise DataError(
            f"episode {index}'s pixels must be (T, 3, H, W) or (T, H, W, 3) uint8, got {pixels.dtype} {pixels.shape}"
        )
    if pixels.shape[-1] != 3:  # the folder and lance readers give channels first
        pixels = pixels.transpose(0, 2, 3, 1)
    theirs = np.asarray(episode["action"], dtype=np.float32).reshape(len(pixels), -1)
    if not np.isfinite(theirs[:-1]).all():
        raise DataError(f"episode {index} holds actions that are not finite (NaN or inf) before its last step")
    actions = np.concatenate([np.zeros_like(theirs[:1]), theirs[:-1]])
    return square_frames(pixels, frame_size), actions


def convert_dataset(
    dataset: str | Path,
    out: str | Path,
    env_id: str,
    action_repeat: int = 1,
    step_seconds: float = SWM_STEP_SECONDS,
    frame_size: int | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write every episode of a stable-worldmodel dataset (a path `swm.data.load_dataset` reads) into `out` as our
    episode files (`tokenizer.data.episodes`): every `action_repeat`-th frame, square at `frame_size` (None: the
    dataset's, centre-cropped), with the block of env actions that led to it scaled to [-1, 1] by `env_id`'s action
    box (`block_episode`), timestamps `step_seconds` per env step. `out` must be new or empty unless `overwrite`;
    it is written beside and swapped in when every episode is."""
    if action_repeat < 1 or not step_seconds > 0:
        raise ConfigError(
            f"action_repeat ({action_repeat}) must be at least 1 and step_seconds ({step_seconds}) positive"
        )
    if frame_size is not None and (frame_size < 8 or frame_size % 8):
        raise ConfigError(
            f"frame_size must be a positive multiple of 8, or null to keep the dataset's, got {frame_size}"
        )
    out = Path(out)
    check_output_folder(out, overwrite, "out", "episodes")
    swm = import_stable_worldmodel()  # also registers the swm/ envs
    try:
        space = gymnasium.make(env_id).action_space
    except (gymnasium.error.Error, ImportError) as err:
        raise ConfigError(f"cannot make env {env_id!r}: {err}") from None
    if not isinstance(space, gymnasium.spaces.Box):
        raise ConfigError(f"{env_id} has a {type(space).__name__} action space; the world models take a Box's actions")
    blocks = ActionBlocks(space.low, space.high, action_repeat)
    try:
        reader = swm.data.load_dataset(str(dataset))
    except (ValueError, FileNotFoundError, OSError) as err:
        raise DataError(f"stable-worldmodel cannot read a dataset at {dataset}: {err}") from None
    lengths = getattr(reader, "lengths", None)
    if lengths is None or not len(lengths):
        raise DataError(f"{dataset} holds no episodes stable-worldmodel's Dataset can list")
    metadata = {"dataset": str(dataset), "env_id": env_id, "action_repeat": str(action_repeat)}
    paths = []
    with staged_output_folder(out, overwrite, "out", "episodes") as stage:
        for index in range(len(lengths)):
            frames, actions = episode_arrays(reader.load_episode(index), index, frame_size)
            if actions.shape[1] != space.shape[0]:
                raise DataError(
                    f"episode {index}'s actions are {actions.shape[1]}-D; {env_id}'s are {space.shape[0]}-D"
                )
            timestamps = torch.arange(len(frames), dtype=torch.float64) * step_seconds
            save_safetensors(block_episode(frames, actions, timestamps, blocks), episode_path(stage, index), metadata)
            paths.append(episode_path(out, index))
    return paths


@dataclass
class ConvertConfig:
    dataset: str = ""  # a stable-worldmodel dataset: a folder, lance or hdf5 path World.collect wrote
    out: str = "runs/swm_episodes"  # folder for our episode files
    env: str = "swm/PushT-v1"  # the env the dataset was collected in: its action box scales the actions to [-1, 1]
    action_repeat: int = 1  # env steps per world-model frame (PlanConfig.action_block when planning)
    step_seconds: float = SWM_STEP_SECONDS  # seconds per env step (swm's PushT and TwoRoom step at 10 Hz)
    frame_size: int | None = None  # square frame size to store (null = the dataset's, centre-cropped)
    overwrite: bool = False  # replace what `out` holds


FLAGS = {
    "--dataset": Flag("dataset", "stable-worldmodel dataset path"),
    "--out": Flag("out", "folder for the episode files"),
    "--env": Flag("env", "env id the dataset was collected in"),
    "--action-repeat": Flag("action_repeat", "env steps per world-model frame", int),
    "--step-seconds": Flag("step_seconds", "seconds per env step", float),
    "--frame-size": Flag("frame_size", "square frame size (default: the dataset's)", int),
    "--overwrite": Flag("overwrite", "replace what the folder holds", bool),
}
COMMANDS = ("convert",)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        raise ConfigError(
            f"name a command first: {', '.join(COMMANDS)} (python -m envs.stable_worldmodel convert --dataset DIR ...)"
        )
    cfg = to_object(parse_run_config(ConvertConfig, __doc__, "--dataset DIR --env ID", argv[1:], FLAGS, None))
    if not cfg.dataset:
        raise ConfigError("convert needs --dataset, the path World.collect wrote")
    paths = convert_dataset(
        cfg.dataset, cfg.out, cfg.env, cfg.action_repeat, cfg.step_seconds, cfg.frame_size, cfg.overwrite
    )
    print(f"converted {len(paths)} episodes of {cfg.dataset} into {cfg.out}")


if __name__ == "__main__":
    run_cli(main)
