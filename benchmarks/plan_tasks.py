"""The plan bench's checks and task draws: the config checked before anything is made (`check_config`), the env
checked against it (`check_env`), the success tests it asks for (`success_of`), and each task set drawn from the
held-out recorded episodes (`draw_task_sets`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.plan_config import BUDGET_METHODS, METHODS, TASK_SETS, PlanBenchConfig
from envs import goal_reaching as gr
from envs.planners import with_budget
from envs.policies import load_policy
from envs.recording import frame_interval, state_vector
from tokenizer.data.episodes import episode_files, held_out
from tokenizer.runtime.errors import ConfigError


def success_of(cfg: PlanBenchConfig) -> gr.Success:
    tests = [cfg.eval, *cfg.eval.more_tests]
    return gr.Success(
        [gr.StateTest(t.tolerance, list(t.state_dims), list(t.state_scale), list(t.state_angles)) for t in tests]
    )


def check_config(cfg: PlanBenchConfig) -> None:
    """The checks that need neither the env nor any file."""
    cfg.planner.validate()
    unknown = sorted(set(cfg.eval.methods) - set(METHODS))
    if unknown or not cfg.eval.methods:
        raise ConfigError(f"eval.methods {unknown or '[]'}: choose from {', '.join(METHODS)}")
    unknown = sorted(set(cfg.eval.task_sets) - set(TASK_SETS))
    if unknown or not cfg.eval.task_sets:
        raise ConfigError(f"eval.task_sets {unknown or '[]'}: choose from {', '.join(TASK_SETS)}")
    unknown = sorted(set(cfg.eval.budget_methods) - set(BUDGET_METHODS))
    if unknown:
        raise ConfigError(f"eval.budget_methods {unknown}: choose from {', '.join(BUDGET_METHODS)}")
    for spec in cfg.eval.budgets:
        with_budget(cfg.planner, spec)
    # Before anything is recorded: the task draw refuses these too, but only after the whole build.
    for name in ("episodes", "goal_offset", "budget"):
        if getattr(cfg.eval, name) < 1:
            raise ConfigError(f"eval.{name} must be at least 1, got {getattr(cfg.eval, name)}")
    if not cfg.eval.budget_minutes >= 0:
        raise ConfigError(f"eval.budget_minutes must be 0 or more, got {cfg.eval.budget_minutes}")
    if cfg.record.frame_size < 8 or cfg.record.frame_size % 8:
        raise ConfigError(
            f"record.frame_size must be a positive multiple of 8 (the models' frame size), got {cfg.record.frame_size}"
        )


@dataclass
class EnvFacts:
    low: np.ndarray
    high: np.ndarray
    dt: float  # seconds between env steps
    state_size: int


def check_env(cfg: PlanBenchConfig, success: gr.Success) -> EnvFacts:
    """Make the env once and check everything the config says of it before anything is recorded: a Box action
    space and rgb_array frames (`gr.make_env`), a state to score (`record.state_key`), the success tests and
    `eval.must_change` against its size, and the collection policy."""
    with gr.make_env(cfg.env, dict(cfg.env_kwargs)) as probe:
        obs, info = probe.reset(seed=cfg.seed)
        state = state_vector(probe, obs, info, cfg.record.state_key)
        if state is None:
            raise ConfigError(
                f"{cfg.env}'s observation is not a state vector: name the info entry to score with record.state_key"
            )
        success.validate(state.shape[0])
        if cfg.eval.must_change:
            if any(not 0 <= d < state.shape[0] for d in cfg.eval.must_change):
                raise ConfigError(
                    f"eval.must_change {list(cfg.eval.must_change)} must index the state's {state.shape[0]} entries"
                )
            success.restricted(cfg.eval.must_change, state.shape[0])
        # One action on the reset observation: a policy that cannot read this env's observations fails here.
        policy = load_policy(cfg.record.policy, probe.action_space, dict(cfg.record.policy_kwargs))
        rng = np.random.default_rng(cfg.seed)
        if hasattr(policy, "reset"):
            policy.reset(rng)
        policy(obs, rng)
        space = probe.action_space
        return EnvFacts(space.low, space.high, frame_interval(probe), state.shape[0])


def min_start(cfg: PlanBenchConfig) -> int:
    """The first start step with a whole context of block frames before it."""
    return (cfg.planner.context - 1) * cfg.action_repeat


def needs_acting_draw(
    cfg: PlanBenchConfig, env, episodes: list[gr.RecordedEpisode], success: gr.Success, facts: EnvFacts
) -> gr.TaskDraw:
    """The `needs_acting` tasks of `episodes` as the config asks for them (`gr.needs_acting_tasks`)."""
    return gr.needs_acting_tasks(
        env,
        episodes,
        cfg.eval.episodes,
        cfg.eval.goal_offset,
        min_start(cfg),
        cfg.eval.seed,
        success,
        cfg.eval.budget,
        gr.ZeroController(facts.low, facts.high).action,
        list(cfg.eval.must_change),
    )


def draw_task_sets(
    cfg: PlanBenchConfig, recorded: Path, env, success: gr.Success, facts: EnvFacts
) -> dict[str, gr.TaskDraw]:
    """Each of `eval.task_sets` drawn from the same held-out episodes with `eval.seed`."""
    episodes = [gr.load_episode(p) for p in held_out(episode_files(recorded))]
    draws = {}
    for name in cfg.eval.task_sets:
        if name == "all":
            tasks = gr.select_tasks(episodes, cfg.eval.episodes, cfg.eval.goal_offset, min_start(cfg), cfg.eval.seed)
            draws[name] = gr.TaskDraw(tasks, len(tasks), {})
        else:
            print("drawing the tasks that need acting (the zero action run on each candidate)", flush=True)
            draws[name] = needs_acting_draw(cfg, env, episodes, success, facts)
            print(
                f"  {len(draws[name].tasks)} of {draws[name].considered} candidates need acting; left out: "
                f"{draws[name].left_out}",
                flush=True,
            )
    return draws
