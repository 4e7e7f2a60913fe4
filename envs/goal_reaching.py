"""Goal reaching from recorded episodes, for any Gymnasium env with a Box action space and rgb_array frames.

This is the protocol DINO-WM, PLDM and LeWM report planning success on (as stable-worldmodel runs it):
- a task is a start step in a held-out recorded episode (`select_tasks`); the goal image is the recorded
  frame `goal_offset` steps later, so the goal is reachable: replaying the recorded actions reaches it.
  `needs_acting_tasks` keeps only tasks an agent has to act on: not already at the goal, not reached by
  the zero action, and (optionally) with the goal differing in named state entries;
- the env is brought to the start state by resetting it with the episode's recorded seed and replaying
  the recorded actions (`reach_start`). This needs a deterministic env: the state replay reaches is
  compared with the recorded one, and an env that does not reproduce it is refused with one line;
- the agent has `budget` env steps; the task succeeds when, after any of them, the env's state (the
  recorded `states`: the observation vector or an `info` entry, `envs.recording.state_vector`) passes
  every test of `Success` (each a `tolerance` over some entries: `StateTest`). The episode ends there, or
  when the budget is spent; distances are reported in tolerances (1 = at the edge of the worst test);
- the agent acts in blocks of `action_repeat` env steps (frameskip): its world model sees one frame per
  block and one action per block, the block's env actions concatenated and scaled to [-1, 1]
  (`ActionBlocks`); `block_episodes` writes the recorded episodes in that form for training.

Controllers choose the actions: `PlanningController` (an `envs.planners.MPCAgent` that plans toward the
goal image), `RandomController`, `ZeroController`, and `ReplayController` (the recorded actions: the
reachability ceiling).
`run_task` runs one task and reports success, the final distance to the goal state, the env steps taken
and the seconds the controller spent choosing actions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from safetensors import safe_open

from envs.planners import MPCAgent
from envs.recording import square_frames, state_vector
from tokenizer.data.episodes import episode_files, episode_path, held_out
from tokenizer.runtime.errors import ConfigError, InputError
from tokenizer.runtime.files import load_weights, save_safetensors

# A deterministic env reproduces its states exactly; this only forgives float printing-level noise.
REPLAY_ATOL = 1e-6


@dataclass
class StateTest:
    """One test of a state against the goal's: the Euclidean distance over `dims` (all when empty), each entry's
    difference divided by its `scale` (1 when empty), is at most `tolerance`. Entries listed in `angles` are
    radians: their difference is taken the short way round the circle."""

    tolerance: float = 0.1
    dims: list[int] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    angles: list[int] = field(default_factory=list)

    def validate(self, state_size: int, key: str = "eval") -> None:
        if not self.tolerance > 0:
            raise ConfigError(f"{key}.tolerance must be positive, got {self.tolerance}")
        for name, dims in (("state_dims", self.dims), ("state_angles", self.angles)):
            if any(not 0 <= d < state_size for d in dims):
                raise ConfigError(f"{key}.{name} {dims} must index the recorded state's {state_size} entries")
        size = len(self.dims) if self.dims else state_size
        if self.scale and (len(self.scale) != size or min(self.scale) <= 0):
            raise ConfigError(
                f"{key}.state_scale needs {size} positive entries (one per compared state entry), got {self.scale}"
            )

    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        difference = np.asarray(state, dtype=np.float64) - np.asarray(goal, dtype=np.float64)
        if self.angles:
            difference[self.angles] = (difference[self.angles] + np.pi) % (2 * np.pi) - np.pi
        if self.dims:
            difference = difference[self.dims]
        if self.scale:
            difference = difference / np.asarray(self.scale, dtype=np.float64)
        return float(np.linalg.norm(difference))

    def restricted(self, entries: Sequence[int], state_size: int) -> StateTest | None:
        """The same test over only those of its entries that are in `entries`; None when it compares none of them."""
        dims = list(self.dims) if self.dims else list(range(state_size))
        kept = [i for i, d in enumerate(dims) if d in set(entries)]
        if not kept:
            return None
        scale = [self.scale[i] for i in kept] if self.scale else []
        return StateTest(self.tolerance, [dims[i] for i in kept], scale, list(self.angles))


@dataclass
class Success:
    """When a state counts as the goal's: it passes every one of `tests` (PushT's, as DINO-WM and stable-worldmodel
    score it: agent and block positions within 20 px, and the block's angle within pi/9)."""

    tests: list[StateTest] = field(default_factory=lambda: [StateTest()])

    @classmethod
    def within(
        cls, tolerance: float, dims: Sequence[int] = (), scale: Sequence[float] = (), angles: Sequence[int] = ()
    ) -> Success:
        """One test: the state within `tolerance` of the goal's (see `StateTest`)."""
        return cls([StateTest(tolerance, list(dims), list(scale), list(angles))])

    def validate(self, state_size: int) -> None:
        if not self.tests:
            raise ConfigError("success needs at least one state test")
        for index, test in enumerate(self.tests):
            test.validate(state_size, "eval" if index == 0 else f"eval.more_tests[{index - 1}]")

    def reached(self, state: np.ndarray, goal: np.ndarray) -> bool:
        return all(test.distance(state, goal) <= test.tolerance for test in self.tests)

    def distance(self, state: np.ndarray, goal: np.ndarray) -> float:
        """How far from passing, in tolerances: the largest of each test's distance over its tolerance (<= 1 when
        every test passes)."""
        return max(test.distance(state, goal) / test.tolerance for test in self.tests)

    def restricted(self, entries: Sequence[int], state_size: int) -> Success:
        """The tests over only the state entries in `entries` (tests that compare none of them dropped)."""
        tests = [t for t in (test.restricted(entries, state_size) for test in self.tests) if t is not None]
        if not tests:
            raise ConfigError(f"eval.must_change {list(entries)} names no state entry any success test compares")
        return Success(tests)


@dataclass
class RecordedEpisode:
    """One episode file of `envs.recording`, with what replay and scoring need."""

    path: Path
    env_id: str
    env_kwargs: dict[str, Any]
    state_key: str | None  # info entry holding the state; None = the observation
    seed: int
    frames: torch.Tensor  # (T, 3, S, S) uint8
    actions: np.ndarray  # (T, A) float32; actions[t] led into frame t
    states: np.ndarray  # (T, S) float64; states[t] after frame t
    timestamps: np.ndarray  # (T,) seconds since reset

    def __len__(self) -> int:
        return len(self.actions)


def load_episode(path: str | Path) -> RecordedEpisode:
    path = Path(path)
    tensors = load_weights(path, f"episode file {path}")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    missing = [key for key in ("frames", "actions", "timestamps", "seed", "states") if key not in tensors]
    if missing:
        raise InputError(
            f"{path} has no {' or '.join(missing)}: goal reaching replays episodes from their reset seed and scores "
            "recorded states; record them with `python -m envs.recording` (for an env whose observation is an "
            "image, name the state with --state-key)"
        )
    return RecordedEpisode(
        path=path,
        env_id=metadata.get("env_id", ""),
        env_kwargs=json.loads(metadata.get("env_kwargs", "{}")),
        state_key=metadata.get("state_key") or None,  # none (or "", in older recordings): the observation
        seed=int(tensors["seed"][0]),
        frames=tensors["frames"],
        actions=tensors["actions"].numpy(),
        states=tensors["states"].numpy(),
        timestamps=tensors["timestamps"].numpy(),
    )


def make_env(
    env_id: str, env_kwargs: dict[str, Any] | None = None, max_episode_steps: int | None = None
) -> gymnasium.Env:
    """`env_id` made with render_mode="rgb_array", refused in one line unless the protocol can run on it."""
    kwargs = dict(env_kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    try:
        env = gymnasium.make(env_id, render_mode="rgb_array", **kwargs)
    except gymnasium.error.DependencyNotInstalled as err:
        raise ConfigError(
            f"{env_id} cannot be made here ({err}); for Gymnasium's classic-control envs: pip install -e "
            "'.[gym-render]'"
        ) from None
    except (gymnasium.error.Error, ImportError) as err:  # ImportError: the module of a "module:Env-v0" id
        raise ConfigError(f"cannot make env {env_id!r}: {err}") from None
    check_env_fits(env, env_id)
    return env


def check_env_fits(env: gymnasium.Env, env_id: str) -> None:
    """Planners search continuous actions in a box, and world models see rendered frames."""
    space = env.action_space
    if not isinstance(space, spaces.Box):
        raise ConfigError(
            f"{env_id} has a {type(space).__name__} action space: goal reaching plans continuous actions and needs a "
            "Box"
        )
    if not space.is_bounded() or len(space.shape) != 1:
        raise ConfigError(
            f"{env_id}'s action space {space} must be a bounded 1-D Box: planners sample inside its bounds"
        )
    if "rgb_array" not in env.metadata.get("render_modes", ()) or env.render_mode != "rgb_array":
        raise ConfigError(
            f"{env_id} does not render rgb_array frames (its render modes: {env.metadata.get('render_modes', [])}); "
            "world models plan from images"
        )


def env_frame(env: gymnasium.Env, size: int | None) -> np.ndarray:
    """The env's current frame as recording stores it: centre square, `size` px (None = as rendered) -> (S, S, 3)
    uint8."""
    frame = env.render()
    return square_frames(np.asarray(frame)[None], size)[0].permute(1, 2, 0).numpy()


@dataclass
class Task:
    """Start at step `start` of `episode`; the goal is its step `start + goal_offset`."""

    episode: RecordedEpisode
    start: int
    goal: int

    @property
    def goal_frame(self) -> np.ndarray:
        return self.episode.frames[self.goal].permute(1, 2, 0).numpy()

    @property
    def goal_state(self) -> np.ndarray:
        return self.episode.states[self.goal]

    @property
    def name(self) -> str:
        return f"{self.episode.path.stem}@{self.start}"


def start_pairs(episodes: Sequence[RecordedEpisode], goal_offset: int, min_start: int) -> list[tuple[int, int]]:
    """Every (episode index, start) from `min_start` on whose goal, `goal_offset` steps later, is in the episode."""
    return [(e, start) for e, episode in enumerate(episodes) for start in range(min_start, len(episode) - goal_offset)]


def select_tasks(
    episodes: Sequence[RecordedEpisode], count: int, goal_offset: int, min_start: int, seed: int
) -> list[Task]:
    """`count` distinct (episode, start) pairs drawn with `seed` among every start from `min_start` on whose goal,
    `goal_offset` steps later, is in the episode."""
    if count < 1 or goal_offset < 1:
        raise ConfigError(f"eval.episodes ({count}) and eval.goal_offset ({goal_offset}) must both be at least 1")
    pairs = start_pairs(episodes, goal_offset, min_start)
    if len(pairs) < count:
        raise ConfigError(
            f"the {len(episodes)} held-out episodes hold {len(pairs)} start states with a goal {goal_offset} steps "
            f"later (starts from step {min_start}), fewer than eval.episodes={count}: record more or longer episodes"
        )
    chosen = np.random.default_rng(seed).choice(len(pairs), size=count, replace=False)
    return [Task(episodes[pairs[i][0]], pairs[i][1], pairs[i][1] + goal_offset) for i in chosen]


def held_out_tasks(root: str | Path, count: int, goal_offset: int, min_start: int, seed: int) -> list[Task]:
    """Tasks from the held-out episodes of a recorded folder."""
    return select_tasks([load_episode(p) for p in held_out(episode_files(root))], count, goal_offset, min_start, seed)


@dataclass
class TaskDraw:
    """Tasks that passed a filter, with how many candidates were looked at and why the others were left out."""

    tasks: list[Task]
    considered: int
    left_out: dict[str, int]


def passively_solved(env: gymnasium.Env, task: Task, action: np.ndarray, success: Success, budget: int) -> bool:
    """Whether holding `action` every env step from the task's start reaches the goal state within `budget` steps
    (nothing is drawn: only the env's states are read)."""
    reach_start(env, task, 0)
    for _ in range(budget):
        obs, _, terminated, truncated, info = env.step(action)
        if success.reached(state_vector(env, obs, info, task.episode.state_key), task.goal_state):
            return True
        if terminated or truncated:
            return False
    return False


def needs_acting_tasks(
    env: gymnasium.Env,
    episodes: Sequence[RecordedEpisode],
    count: int,
    goal_offset: int,
    min_start: int,
    seed: int,
    success: Success,
    budget: int,
    zero_action: np.ndarray,
    must_change: Sequence[int] = (),
) -> TaskDraw:
    """Up to `count` tasks, drawn with `seed` from the same start pairs as `select_tasks`, that an agent has to act
    to solve: the start is not already at the goal; the zero action held for the whole `budget` does not reach it
    (the env's own dynamics do not solve it: a pendulum left alone swings through many goals); and, when
    `must_change` names state entries (PushT's block position and angle), the goal differs from the start in those
    entries by more than the success tests allow (else a pushing task is only a reaching one).

    Candidates are tried in a seeded order until `count` qualify; fewer is not an error (the draw says how many),
    none is."""
    pairs = start_pairs(episodes, goal_offset, min_start)
    state_size = episodes[0].states.shape[1]
    moved = success.restricted(must_change, state_size) if must_change else None
    left_out = {"starts_at_goal": 0, "must_change_unchanged": 0, "zero_action_solves": 0}
    tasks: list[Task] = []
    considered = 0
    for index in np.random.default_rng(seed).permutation(len(pairs)):
        if len(tasks) == count:
            break
        considered += 1
        episode, start = episodes[pairs[index][0]], pairs[index][1]
        task = Task(episode, start, start + goal_offset)
        if success.reached(episode.states[start], task.goal_state):
            left_out["starts_at_goal"] += 1
        elif moved is not None and moved.reached(episode.states[start], task.goal_state):
            left_out["must_change_unchanged"] += 1
        elif passively_solved(env, task, zero_action, success, budget):
            left_out["zero_action_solves"] += 1
        else:
            tasks.append(task)
    if not tasks:
        raise ConfigError(
            f"none of the {len(pairs)} held-out start states needs acting ({left_out}): record episodes whose "
            "goals the env does not reach by itself"
        )
    return TaskDraw(tasks, considered, left_out)


def check_replayed(episode: RecordedEpisode, step: int, state: np.ndarray | None) -> None:
    expected = episode.states[step]
    if state is None or state.shape != expected.shape or not np.allclose(state, expected, rtol=0, atol=REPLAY_ATOL):
        gap = (
            "a state of another shape"
            if state is None or state.shape != expected.shape
            else f"a state {np.abs(state - expected).max():.3g} away"
        )
        raise InputError(
            f"{episode.env_id or 'the env'} is not deterministic: reset with seed {episode.seed} and replaying "
            f"{episode.path.name}'s recorded actions reached {gap} from the recorded one at step {step}; goal "
            "reaching needs an env that replays exactly"
        )


def reach_start(
    env: gymnasium.Env, task: Task, frame_size: int, frame_steps: Sequence[int] = ()
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Reset with the recorded seed and replay the recorded actions up to `task.start`.

    -> the state reached (checked against the recorded one: `check_replayed`) and the frames at `frame_steps`
    (steps <= start; the context a planner starts from, as the env shows it)."""
    episode = task.episode
    wanted = set(frame_steps)
    obs, info = env.reset(seed=episode.seed)
    frames = {0: env_frame(env, frame_size)} if 0 in wanted else {}
    for step in range(1, task.start + 1):
        obs, _, terminated, truncated, info = env.step(episode.actions[step])
        if step in wanted:
            frames[step] = env_frame(env, frame_size)
        if (terminated or truncated) and step < task.start:
            raise InputError(
                f"replaying {episode.path.name} ended the episode at step {step}, before the start step {task.start}"
            )
    state = state_vector(env, obs, info, episode.state_key)
    check_replayed(episode, task.start, state)
    return state, frames


def check_replay(env: gymnasium.Env, episode: RecordedEpisode) -> None:
    """Replay a whole recorded episode from its seed and check every state: refuses a non-deterministic env in one
    line."""
    obs, info = env.reset(seed=episode.seed)
    check_replayed(episode, 0, state_vector(env, obs, info, episode.state_key))
    for step in range(1, len(episode)):
        obs, _, terminated, truncated, info = env.step(episode.actions[step])
        check_replayed(episode, step, state_vector(env, obs, info, episode.state_key))
        if terminated or truncated:
            break


@dataclass
class ActionBlocks:
    """Env actions in [low, high]^A <-> world-model actions: `repeat` consecutive env actions, each scaled to
    [-1, 1], concatenated into one (repeat * A,) vector (the peers' frameskip with action blocks)."""

    low: np.ndarray
    high: np.ndarray
    repeat: int

    def __post_init__(self) -> None:
        self.low, self.high = np.asarray(self.low, dtype=np.float64), np.asarray(self.high, dtype=np.float64)
        if self.repeat < 1:
            raise ConfigError(f"action_repeat must be at least 1, got {self.repeat}")
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all() and (self.high > self.low).all()):
            raise ConfigError("action blocks need a bounded Box action space with high > low")

    @property
    def dim(self) -> int:
        return self.repeat * self.low.shape[0]

    def to_model(self, actions: np.ndarray) -> np.ndarray:
        """Env actions (..., repeat, A) -> world-model actions (..., repeat * A) float32 in [-1, 1]."""
        scaled = 2 * (np.asarray(actions, dtype=np.float64) - self.low) / (self.high - self.low) - 1
        return scaled.reshape(*scaled.shape[:-2], self.dim).astype(np.float32)

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """World-model actions (..., repeat * A) -> env actions (..., repeat, A) float32 within the bounds."""
        blocks = np.clip(np.asarray(actions, dtype=np.float64), -1, 1).reshape(*np.shape(actions)[:-1], self.repeat, -1)
        return (self.low + (blocks + 1) / 2 * (self.high - self.low)).astype(np.float32)


def block_episode(
    frames: torch.Tensor, actions: np.ndarray, timestamps: torch.Tensor, blocks: ActionBlocks
) -> dict[str, torch.Tensor]:
    """One episode (frames (T, ...), env actions (T, A) with actions[t] leading into frame t, timestamps (T,)) as a
    world model sees it under the protocol: every `repeat`-th frame, and for each kept frame the block of actions
    that led to it (`ActionBlocks.to_model`; zeros for the first)."""
    kept = list(range(0, (len(frames) - 1) // blocks.repeat * blocks.repeat + 1, blocks.repeat))
    grouped = [np.zeros(blocks.dim, dtype=np.float32)]
    grouped += [blocks.to_model(actions[t - blocks.repeat + 1 : t + 1]) for t in kept[1:]]
    return {"frames": frames[kept], "actions": torch.from_numpy(np.stack(grouped)), "timestamps": timestamps[kept]}


def block_episodes(recorded: str | Path, out: str | Path, blocks: ActionBlocks) -> list[Path]:
    """Write each recorded episode in `block_episode`'s form. The same file names, so `held_out` picks the same
    episodes in both folders."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, path in enumerate(episode_files(recorded)):
        episode = load_weights(path, f"episode file {path}")
        target = episode_path(out, index)
        save_safetensors(
            block_episode(episode["frames"], episode["actions"].numpy(), episode["timestamps"], blocks),
            target,
            metadata={"action_repeat": str(blocks.repeat), "recorded": str(path)},
        )
        paths.append(target)
    return paths


class Controller(Protocol):
    """Chooses env actions for one task at a time."""

    def reset(self, task: Task, context: list[np.ndarray]) -> None:
        """A new task; `context` holds real frames before the start, one per block, oldest first."""

    def act(self, frame: np.ndarray | None) -> np.ndarray:
        """The next env action (A,); `frame` is the env's frame at the start of each block, else None."""


class RandomController:
    """Uniform actions in the action box, a new one every env step, from one seeded stream."""

    def __init__(self, low: np.ndarray, high: np.ndarray, seed: int):
        self.low, self.high = np.asarray(low), np.asarray(high)
        self.rng = np.random.default_rng(seed)

    def reset(self, task: Task, context: list[np.ndarray]) -> None:
        pass

    def act(self, frame: np.ndarray | None) -> np.ndarray:
        return self.rng.uniform(self.low, self.high).astype(np.float32)


class ZeroController:
    """The zero action (brought into the action box) every env step: the env left alone where zero means no
    force (Pendulum's torque), which counts the tasks the env's own dynamics solve. Not "stay" where actions
    are targets (PushT's are positions)."""

    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.action = np.clip(np.zeros_like(low, dtype=np.float32), low, high)

    def reset(self, task: Task, context: list[np.ndarray]) -> None:
        pass

    def act(self, frame: np.ndarray | None) -> np.ndarray:
        return self.action.copy()


class ReplayController:
    """The recorded actions from the start: reaches the goal at step `goal_offset` when the env replays exactly."""

    def reset(self, task: Task, context: list[np.ndarray]) -> None:
        self.actions, self.step = task.episode.actions, task.start

    def act(self, frame: np.ndarray | None) -> np.ndarray:
        self.step = min(self.step + 1, len(self.actions) - 1)  # past the recording, its last action again
        return self.actions[self.step].astype(np.float32)


class PlanningController:
    """An MPCAgent over action blocks: at each block's first step it observes the frame; when the previous
    plan's `receding_horizon` blocks are spent it plans again toward the goal image."""

    def __init__(self, agent: MPCAgent, blocks: ActionBlocks):
        if agent.world.config.actions.dim != blocks.dim:
            raise ConfigError(
                f"the world model takes {agent.world.config.actions.dim}-D actions; blocks of {blocks.repeat} "
                f"actions of this env are {blocks.dim}-D"
            )
        self.agent, self.blocks = agent, blocks
        self.steps_applied = agent.planner.config.steps_applied
        self.queue: list[np.ndarray] = []

    def reset(self, task: Task, context: list[np.ndarray]) -> None:
        self.agent.reset(task.goal_frame)
        for frame in context:
            self.agent.observe(frame)
        self.queue = []

    def act(self, frame: np.ndarray | None) -> np.ndarray:
        if frame is not None:
            self.agent.observe(frame)
            if not self.queue:
                plan = self.agent.plan_steps(self.steps_applied)  # (k, repeat * A)
                self.queue = list(self.blocks.to_env(plan).reshape(-1, self.blocks.low.shape[0]))
        if not self.queue:
            raise InputError("a planning controller must see the frame at the start of each block")
        return self.queue.pop(0)


@dataclass
class EpisodeResult:
    task: str
    success: bool
    steps: int  # env steps taken
    seconds: float  # spent choosing actions (observing frames and planning included)
    final_distance: float  # to the goal state, when the episode ended
    frames: list[np.ndarray] | None = None  # the start frame and every env step's, when asked for


def context_steps(start: int, frames: int, repeat: int) -> list[int]:
    """Steps of the real frames a planner starts from: up to `frames` block starts ending at `start`, none before 0."""
    return [start - k * repeat for k in range(frames - 1, -1, -1) if start - k * repeat >= 0]


def run_task(
    env: gymnasium.Env,
    task: Task,
    controller: Controller,
    success: Success,
    budget: int,
    repeat: int,
    frame_size: int,
    context: int = 1,
    keep_frames: bool = False,
) -> EpisodeResult:
    """Bring the env to the task's start, then let `controller` act for up to `budget` env steps; it gets the
    frame at the start of every block of `repeat` steps, and the `context - 1` block frames before the start
    first. The task succeeds when a state after a step is within tolerance of the goal state."""
    steps = context_steps(task.start, context, repeat)
    state, frames = reach_start(env, task, frame_size, steps)
    start_frame = frames[task.start]
    started = time.perf_counter()
    controller.reset(task, [frames[s] for s in steps[:-1]])
    seconds = time.perf_counter() - started
    seen = [start_frame] if keep_frames else None
    distance, reached, taken = success.distance(state, task.goal_state), False, 0
    block_frame: np.ndarray | None = start_frame
    while taken < budget and not reached:
        started = time.perf_counter()
        action = controller.act(block_frame)
        seconds += time.perf_counter() - started
        obs, _, terminated, truncated, info = env.step(action)
        taken += 1
        state = state_vector(env, obs, info, task.episode.state_key)
        distance = success.distance(state, task.goal_state)
        reached = success.reached(state, task.goal_state)
        at_block = taken % repeat == 0
        frame = env_frame(env, frame_size) if keep_frames or at_block else None
        block_frame = frame if at_block else None
        if keep_frames:
            seen.append(frame)
        if terminated or truncated:
            break
    return EpisodeResult(task.name, reached, taken, seconds, distance, seen)


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate: stays inside [0, 1] and is not empty at 0 or n successes."""
    if trials < 1:
        return (0.0, 1.0)
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * np.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    # At 0 or n successes the bound is exactly 0 or 1; rounding would leave it a hair inside.
    low = 0.0 if successes == 0 else max(0.0, float(centre - half))
    high = 1.0 if successes == trials else min(1.0, float(centre + half))
    return (low, high)


def summarize(results: Sequence[EpisodeResult]) -> dict[str, Any]:
    """Success rate with its 95 % Wilson interval, mean final distance to the goal state, seconds per env step."""
    wins = sum(r.success for r in results)
    steps = sum(r.steps for r in results)
    return {
        "success_rate": wins / len(results),
        "success_ci95": list(wilson_interval(wins, len(results))),
        "mean_final_distance": float(np.mean([r.final_distance for r in results])),
        "seconds_per_step": sum(r.seconds for r in results) / max(steps, 1),
        "episodes": len(results),
        "env_steps": steps,
    }
