"""The goal-reaching protocol (envs.goal_reaching) on a tiny deterministic env, and one task planned in a micro world
model."""

from __future__ import annotations

import math
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium import spaces
from safetensors import safe_open

from envs import goal_reaching as gr
from envs.planners import MPCAgent, Planner, PlannerConfig
from envs.recording import record
from test_envs import OnTheModelsDevice, micro_world
from tokenizer.data.episodes import EpisodeClips, episode_files
from tokenizer.runtime.errors import CheckpointError, ConfigError, InputError
from tokenizer.runtime.files import load_weights
from worldmodel.objectives import ActionSpace

SIZE = 32
POINT_ID = "deltaworld-test/Point-v0"
NOISY_ID = "deltaworld-test/NoisyPoint-v0"


class PointEnv(gymnasium.Env):
    """A dot moved by a bounded 2-D velocity in a 32-pixel square; the observation is its position."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode: str | None = "rgb_array", noisy: bool = False):
        self.render_mode, self.noisy = render_mode, noisy
        self.action_space = spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.observation_space = spaces.Box(0.0, 1.0, (2,), np.float64)
        self.position = np.full(2, 0.5)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(0.2, 0.8, size=2)
        return self.position.copy(), {}

    def step(self, action):
        jitter = np.random.default_rng().normal(0, 0.01, 2) if self.noisy else 0.0  # ignores the seed: not replayable
        self.position = np.clip(self.position + 0.05 * np.asarray(action, dtype=np.float64) + jitter, 0.0, 1.0)
        return self.position.copy(), 0.0, False, False, {}

    def render(self):
        frame = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
        x, y = (self.position * (SIZE - 4)).astype(int)
        frame[y : y + 4, x : x + 4] = 255
        return frame


class NoRender(PointEnv):
    metadata = {"render_modes": [], "render_fps": 10}

    def __init__(self, render_mode=None):
        super().__init__(None)


for env_id, entry in (
    (POINT_ID, PointEnv),
    (NOISY_ID, lambda **kw: PointEnv(noisy=True, **kw)),
    ("deltaworld-test/NoRender-v0", NoRender),
):
    if env_id not in gymnasium.registry:
        gymnasium.register(id=env_id, entry_point=entry, max_episode_steps=200)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    root = tmp_path_factory.mktemp("point")
    record(POINT_ID, 10, root, seed=3, max_steps=30, frame_size=SIZE)
    return root


def test_recording_stores_the_seed_and_the_states(recorded, tmp_path):
    episode = gr.load_episode(episode_files(recorded)[0])
    assert episode.env_id == POINT_ID and episode.seed == 3 * 1_000_003 and episode.state_key is None
    assert episode.states.shape == (31, 2) and episode.states.dtype == np.float64 and len(episode) == 31
    env = gr.make_env(POINT_ID)
    obs, _ = env.reset(seed=episode.seed)
    np.testing.assert_array_equal(obs, episode.states[0])
    # An image-observation env records its state from the info entry named; without one it has none to score.
    record("deltaworld/Shapes-v0", 1, tmp_path / "shapes", max_steps=3, state_key="agent_position")
    shapes = gr.load_episode(tmp_path / "shapes" / "episode_000000.safetensors")
    assert shapes.states.shape == (4, 2) and shapes.state_key == "agent_position"
    record("deltaworld/Shapes-v0", 1, tmp_path / "bare", max_steps=3)
    with pytest.raises(InputError, match="has no states.*--state-key"):
        gr.load_episode(tmp_path / "bare" / "episode_000000.safetensors")
    with pytest.raises(ConfigError, match="not in this env's info"):
        record("deltaworld/Shapes-v0", 1, tmp_path / "wrong", max_steps=3, state_key="nope")


def test_goal_selection_takes_held_out_starts_and_the_frame_goal_offset_later(recorded):
    files = episode_files(recorded)
    held = gr.held_out(files)
    assert held == [files[9]]
    assert [
        p for p, _ in EpisodeClips(recorded, 2, SIZE, 0, split="val").episodes
    ] == held  # the split training leaves out
    tasks = gr.held_out_tasks(recorded, 5, goal_offset=10, min_start=4, seed=0)
    assert len({t.start for t in tasks}) == 5 and all(t.episode.path == files[9] for t in tasks)
    assert all(4 <= t.start and t.goal == t.start + 10 <= 30 for t in tasks)
    np.testing.assert_array_equal(tasks[0].goal_frame, tasks[0].episode.frames[tasks[0].goal].permute(1, 2, 0).numpy())
    assert [t.start for t in gr.held_out_tasks(recorded, 5, 10, 4, seed=0)] == [t.start for t in tasks]  # seeded
    with pytest.raises(ConfigError, match="fewer than eval.episodes=30"):
        gr.held_out_tasks(recorded, 30, 10, 4, seed=0)  # starts 4..20: 17 of them


def test_replay_reaches_the_start_and_the_goal_and_success_reads_the_state(recorded):
    env = gr.make_env(POINT_ID)
    task = gr.held_out_tasks(recorded, 1, goal_offset=10, min_start=4, seed=0)[0]
    state, frames = gr.reach_start(env, task, SIZE, [task.start - 4, task.start])
    np.testing.assert_array_equal(state, task.episode.states[task.start])
    np.testing.assert_array_equal(frames[task.start], task.episode.frames[task.start].permute(1, 2, 0).numpy())
    success = gr.Success.within(1e-9)
    replayed = gr.run_task(
        env, task, gr.ReplayController(), success, budget=20, repeat=2, frame_size=SIZE, context=3, keep_frames=True
    )
    assert replayed.success and replayed.steps == 10 and replayed.final_distance == 0.0 and len(replayed.frames) == 11
    np.testing.assert_array_equal(replayed.frames[-1], task.goal_frame)
    # The zero action leaves the dot where the start put it: the whole budget spent at the start's distance.
    standing = gr.run_task(
        env, task, gr.ZeroController(env.action_space.low, env.action_space.high), success, 20, 2, SIZE
    )
    start_distance = success.distance(task.episode.states[task.start], task.goal_state)
    assert not standing.success and standing.steps == 20 and standing.final_distance == pytest.approx(start_distance)
    assert start_distance > 0
    np.testing.assert_array_equal(gr.ZeroController(np.ones(2), np.full(2, 3.0)).act(None), np.ones(2))  # in the box
    # Distance over chosen entries, each scaled: (3, 4) / (1, 2) over both -> (3, 2).
    assert gr.StateTest(1.0, [], [1.0, 2.0]).distance(np.array([3.0, 4.0]), np.zeros(2)) == pytest.approx(
        np.hypot(3, 2)
    )
    assert gr.StateTest(1.0, [1]).distance(np.array([3.0, 4.0]), np.zeros(2)) == 4.0
    # An angle's difference goes the short way round: 6.2 rad from 0.1 rad is 0.183 rad away.
    assert gr.StateTest(1.0, [], [], [1]).distance(np.array([0.0, 6.2]), np.array([0.0, 0.1])) == pytest.approx(
        2 * np.pi - 6.1
    )
    for bad, message in (
        (gr.Success.within(0.0), "positive"),
        (gr.Success.within(1.0, [2]), "state_dims.*index"),
        (gr.Success.within(1.0, [], [], [5]), "state_angles"),
        (gr.Success.within(1.0, [], [1.0]), "2 positive"),
        (gr.Success([gr.StateTest(1.0), gr.StateTest(-1.0)]), "more_tests\\[0\\].tolerance must be positive"),
    ):
        with pytest.raises(ConfigError, match=message):
            bad.validate(2)


def test_unfit_envs_are_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError, match="Discrete action space"):
        gr.make_env("CartPole-v1")
    with pytest.raises(ConfigError, match="rgb_array"), pytest.warns(UserWarning, match="render_mode"):
        gr.make_env("deltaworld-test/NoRender-v0")
    record(NOISY_ID, 1, tmp_path, seed=0, max_steps=5, frame_size=SIZE)
    episode = gr.load_episode(tmp_path / "episode_000000.safetensors")
    with pytest.raises(InputError, match="not deterministic") as caught:
        gr.check_replay(gr.make_env(NOISY_ID), episode)
    assert "\n" not in str(caught.value)


def test_action_blocks_and_block_episodes(recorded, tmp_path):
    blocks = gr.ActionBlocks(np.array([-2.0, -2.0]), np.array([2.0, 2.0]), repeat=3)
    env_actions = np.array([[[-2.0, 0.0], [2.0, 1.0], [0.0, -1.0]]], dtype=np.float32)
    model = blocks.to_model(env_actions)
    np.testing.assert_allclose(model, [[-1.0, 0.0, 1.0, 0.5, 0.0, -0.5]])
    np.testing.assert_allclose(blocks.to_env(model), env_actions)
    assert blocks.to_env(np.full(6, 7.0)).max() == 2.0  # clipped to the box
    gr.block_episodes(recorded, tmp_path, blocks)
    source = load_weights(episode_files(recorded)[0])
    block = load_weights(tmp_path / "episode_000000.safetensors")
    assert block["frames"].shape[0] == 11 and torch.equal(block["frames"][1], source["frames"][3])
    torch.testing.assert_close(block["timestamps"], source["timestamps"][::3])
    assert torch.equal(block["actions"][0], torch.zeros(6))
    expected = blocks.to_model(source["actions"][4:7].numpy()[None])[0]
    np.testing.assert_allclose(block["actions"][2].numpy(), expected)
    with pytest.raises(ConfigError, match="action_repeat"):
        gr.ActionBlocks(np.zeros(1), np.ones(1), repeat=0)


def test_wilson_interval_and_summary():
    assert gr.wilson_interval(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert gr.wilson_interval(5, 10) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    assert gr.wilson_interval(10, 10)[1] == 1.0
    rows = [gr.EpisodeResult("a", True, 10, 1.0, 0.0), gr.EpisodeResult("b", False, 30, 3.0, 2.0)]
    summary = gr.summarize(rows)
    assert (
        summary["success_rate"] == 0.5 and summary["mean_final_distance"] == 1.0 and summary["seconds_per_step"] == 0.1
    )


def planning_controller(tokenizer, blocks: gr.ActionBlocks, receding: int | None = None) -> gr.PlanningController:
    world = micro_world(tokenizer, actions=ActionSpace(dim=blocks.dim), readout=True)
    planner = Planner(
        PlannerConfig(horizon=2, candidates=4, iterations=1, elites=2, context=2, receding_horizon=receding),
        -np.ones(blocks.dim),
        np.ones(blocks.dim),
    )
    return gr.PlanningController(MPCAgent(world, planner, dt=0.2, seed=0), blocks)


def test_one_task_planned_end_to_end_in_a_micro_world_model(tokenizer, recorded, monkeypatch):
    env = gr.make_env(POINT_ID)
    blocks = gr.ActionBlocks(env.action_space.low, env.action_space.high, repeat=2)
    task = gr.held_out_tasks(recorded, 1, goal_offset=10, min_start=2, seed=0)[0]
    controller = planning_controller(tokenizer, blocks)
    plans = []
    plan_steps = controller.agent.plan_steps
    monkeypatch.setattr(controller.agent, "plan_steps", lambda count: plans.append(count) or plan_steps(count))
    result = gr.run_task(env, task, controller, gr.Success.within(1e-9), budget=5, repeat=2, frame_size=SIZE, context=2)
    # 5 steps in blocks of 2, the whole 2-block plan applied each time: plans at steps 0 and 4.
    assert result.steps == 5 and plans == [2, 2] and result.seconds > 0 and np.isfinite(result.final_distance)
    assert len(controller.agent.frames) == 2  # the context: the newest two block frames
    with pytest.raises(ConfigError, match="4-D actions"):
        gr.PlanningController(controller.agent, gr.ActionBlocks(np.zeros(1), np.ones(1), repeat=3))


def test_goal_reaching_keeps_every_tensor_on_the_models_device(tokenizer, recorded):
    env = gr.make_env(POINT_ID)
    blocks = gr.ActionBlocks(env.action_space.low, env.action_space.high, repeat=2)
    task = gr.held_out_tasks(recorded, 1, goal_offset=10, min_start=2, seed=0)[0]
    controller = planning_controller(tokenizer, blocks, receding=1)
    parameter = next(controller.agent.world.parameters())
    with torch.device("meta"), OnTheModelsDevice(parameter.device, parameter.dtype):
        result = gr.run_task(
            env, task, controller, gr.Success.within(1e-9), budget=4, repeat=2, frame_size=SIZE, context=2
        )
    assert result.steps == 4


def test_the_bench_scores_every_method_on_the_same_tasks_with_a_gif_each(tokenizer, recorded, tmp_path):
    from benchmarks.plan_bench import controller_for, evaluate
    from benchmarks.plan_config import PlanBenchConfig

    env = gr.make_env(POINT_ID)
    cfg = PlanBenchConfig(env=POINT_ID, action_repeat=2)
    cfg.record.frame_size = SIZE
    cfg.planner = PlannerConfig(horizon=2, candidates=4, iterations=1, elites=2, context=2, cost_steps="last")
    cfg.eval.budget = 4
    blocks = gr.ActionBlocks(env.action_space.low, env.action_space.high, cfg.action_repeat)
    micro_world(tokenizer, actions=ActionSpace(dim=blocks.dim), readout=True).save_pretrained(tmp_path / "deltaworld")
    tasks = gr.held_out_tasks(recorded, 2, goal_offset=4, min_start=2, seed=0)
    rows = {}
    for name in ("deltaworld_token_cem", "replay"):
        controller = controller_for(
            name, cfg, {"deltaworld": tmp_path / "deltaworld"}, blocks, 0.2, blocks.low, blocks.high
        )
        rows[name] = evaluate(name, controller, env, tasks, cfg, gr.Success.within(1e-9), tmp_path)
    for row in rows.values():
        assert {
            "success_rate",
            "success_ci95",
            "mean_final_distance",
            "seconds_per_step",
            "flops_per_planning_step",
        } <= set(row)
        assert [t["task"] for t in row["tasks"]] == [t.name for t in tasks]
        assert Path(row["gif"]).parent == tmp_path / "gifs" / "all" and Path(row["gif"]).is_file()
        assert row["gif_task"] == tasks[0].name  # none solved: the first task
    assert rows["replay"]["success_rate"] == 1.0 and rows["replay"]["flops_per_planning_step"] == 0
    assert rows["replay"]["gif_task"] == tasks[0].name
    assert rows["deltaworld_token_cem"]["flops_per_planning_step"] > 0


@pytest.mark.parametrize(
    "override, message",
    [
        ("tokenizer.checkpoint={nowhere}", "tokenizer.checkpoint .* does not exist"),
        ("tokenizer={nowhere}", "is a section .* did you mean 'tokenizer.checkpoint'"),
        ("eval.methods=[astar]", "eval.methods \\['astar'\\]"),
        ("eval.task_sets=[easy]", "eval.task_sets \\['easy'\\]"),
        ("eval.budgets=[lots]", "search budget 'lots'"),
        ("planner.cost_blur=nan", "planner.cost_blur is a Gaussian's std"),
        ("eval.budget_methods=[random]", "eval.budget_methods \\['random'\\]"),
        # Checked against the env before anything is recorded: Shapes-v0's agent_position has 2 entries.
        ("eval.state_scale=[1.0,1.0,8.0]", "eval.state_scale needs 2 positive entries"),
        ("eval.must_change=[4]", "eval.must_change \\[4\\] must index the state's 2 entries"),
        ("record.policy=pusht_near_block", "pusht_near_block reads PushT's state observation"),
        ("record.state_key=null", "name the info entry to score with record.state_key"),
    ],
)
def test_plan_bench_refuses_bad_config_before_making_anything(tmp_path, override, message):
    from benchmarks import plan_bench

    out = tmp_path / "bench"
    # A missing checkpoint is a CheckpointError, as in every command; the rest are the config's.
    with pytest.raises(CheckpointError if "checkpoint" in override else ConfigError, match=message):
        plan_bench.main(["--out", str(out), override.format(nowhere=tmp_path / "nowhere")])
    assert not out.exists()


def test_success_passes_every_test_and_reads_distance_in_tolerances():
    # PushT as DINO-WM scores it: agent and block positions within 20 px, the block's angle within pi/9.
    pusht = gr.Success([gr.StateTest(20.0, [0, 1, 2, 3]), gr.StateTest(np.pi / 9, [4], angles=[4])])
    goal = np.array([100.0, 100.0, 200.0, 200.0, 0.1])
    assert pusht.reached(goal + [10.0, 0.0, 0.0, 10.0, 0.2], goal)
    assert not pusht.reached(goal + [0.0, 0.0, 0.0, 0.0, np.pi / 8], goal)  # in place, turned too far
    assert not pusht.reached(goal + [0.0, 0.0, 25.0, 0.0, 0.0], goal)  # turned right, pushed too far
    assert pusht.reached(goal + [0.0, 0.0, 0.0, 0.0, 2 * np.pi], goal)  # a whole turn is no turn
    assert pusht.distance(goal + [0.0, 0.0, 30.0, 0.0, 0.0], goal) == pytest.approx(1.5)  # the worst test decides
    # Restricted to the block (entries 2-4): the agent's own move no longer counts.
    block = pusht.restricted([2, 3, 4], 5)
    assert block.reached(goal + [90.0, 0.0, 0.0, 0.0, 0.0], goal)
    assert [t.dims for t in block.tests] == [[2, 3], [4]]
    with pytest.raises(ConfigError, match="must_change"):
        gr.Success.within(1.0, [0]).restricted([1], 2)


def test_needs_acting_leaves_out_tasks_solved_without_acting(recorded):
    episodes = [gr.load_episode(p) for p in episode_files(recorded)]
    env = gr.make_env(POINT_ID, max_episode_steps=200)
    zero = np.zeros(2, dtype=np.float32)
    wide = gr.Success.within(0.15)  # many starts of the point env lie within 0.15 of their goal 5 steps later
    draw = gr.needs_acting_tasks(env, episodes, 8, 5, 0, 0, wide, 10, zero)
    assert len(draw.tasks) == 8 and draw.left_out["starts_at_goal"] > 0
    assert draw.considered == 8 + sum(draw.left_out.values())
    for task in draw.tasks:
        assert not wide.reached(task.episode.states[task.start], task.goal_state)
        assert not gr.passively_solved(env, task, zero, wide, 10)
    # A tolerance wider than the arena: every start is already at its goal.
    with pytest.raises(ConfigError, match="none of the .* needs acting"):
        gr.needs_acting_tasks(env, episodes, 8, 5, 0, 0, gr.Success.within(10.0), 10, zero)
    moved_x = gr.needs_acting_tasks(env, episodes, 4, 5, 0, 0, gr.Success.within(0.05, [0, 1]), 10, zero, [0])
    assert all(abs(t.episode.states[t.goal][0] - t.episode.states[t.start][0]) > 0.05 for t in moved_x.tasks)
    assert moved_x.left_out["must_change_unchanged"] > 0
    # The zero action leaves the dot standing; an action held toward the goal reaches it, and would leave the task out.
    task = draw.tasks[0]
    toward = np.clip((task.goal_state - task.episode.states[task.start]) / 0.05, -2, 2).astype(np.float32)
    assert gr.passively_solved(env, task, toward, gr.Success.within(0.2), 10)


def test_the_budget_sweep_reuses_the_planners_row_and_skips_what_does_not_fit(tmp_path):
    from benchmarks.plan_bench import budget_sweep
    from benchmarks.plan_config import PlanBenchConfig
    from benchmarks.plan_report import plot_budgets

    cfg = PlanBenchConfig()
    cfg.planner = PlannerConfig(candidates=64, iterations=3, elites=8)
    cfg.eval.budgets = ["128x3/16", "peers"]
    cfg.eval.budget_methods = ["deltaworld_token_cem", "dinoworld_cem"]
    cfg.eval.budget_minutes = 1.0
    measured = {"success_rate": 0.5, "success_ci95": [0.3, 0.7], "env_steps": 100}
    rows = {
        "deltaworld_token_cem": {**measured, "seconds_per_step": 0.1},  # 128x3: an estimated 15 s; peers: 400 s
        "dinoworld_cem": {**measured, "seconds_per_step": 1.0},  # 128x3: 150 s
    }
    ran = []

    def run(method, planner):
        ran.append((method, planner.candidates, planner.iterations, planner.elites))
        return {**measured, "success_rate": 0.75, "success_ci95": [0.6, 0.85], "seconds_per_step": 0.2}

    # One iteration of 128 candidates costs 1.5x one of 64 (tiny models are not FLOP-bound); 300 cost 4x.
    per_iteration = {64: 1.0, 128: 1.5, 300: 4.0}
    budgets = budget_sweep(cfg, rows, run, lambda method, candidates: per_iteration[candidates])
    assert ran == [("deltaworld_token_cem", 128, 3, 16)]  # the only one that fits a minute
    assert [(r["method"], r["budget"], bool(r.get("skipped"))) for r in budgets] == [
        ("deltaworld_token_cem", "64x3/8", False),
        ("dinoworld_cem", "64x3/8", False),
        ("deltaworld_token_cem", "128x3/16", False),
        ("dinoworld_cem", "128x3/16", True),
        ("deltaworld_token_cem", "300x30/30", True),
        ("dinoworld_cem", "300x30/30", True),
    ]
    assert budgets[2]["success_rate"] == 0.75 and budgets[3]["estimated_seconds"] == pytest.approx(150.0)
    plot_budgets(budgets, tmp_path / "budgets.png", "test")
    assert (tmp_path / "budgets.png").stat().st_size > 1000


def test_the_plan_bench_runs_from_nothing_in_its_own_process(tmp_path, monkeypatch, capsys):
    """Micro models on 32 px Shapes: record, train everything in this process, draw both task sets, evaluate, sweep
    one budget, report."""
    import json
    import subprocess

    from benchmarks import plan_bench, plan_diagnosis

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"the plan bench started a process: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    small = "train.max_steps=2,data.val_clips=2,train.batch_size=2"
    worlds = f"{small},data.num_frames=4,eval.context=2"
    out = tmp_path / "bench"
    args = [
        "--out",
        str(out),
        "record.episodes=10",
        "record.max_steps=20",
        "record.frame_size=32",
        f"tokenizer_train.overrides=[{small},feature_pool=8]",
        f"deltaworld.overrides=[{worlds},cache.num_clips=4]",
        # A size in the section's overrides yields to the action blocks' (2 x action_repeat).
        f"dinoworld.overrides=[{worlds},model.actions.dim=2]",
        "eval.episodes=2",
        "eval.budget=4",
        "eval.goal_offset=10",  # the planner's 2 blocks of 5 env steps: the recorded actions span them
        "eval.methods=[deltaworld_token_cem,random,zero_action]",
        "eval.budgets=[8x1/2]",
        "eval.budget_methods=[deltaworld_token_cem]",
        "planner.candidates=4",
        "planner.iterations=1",
        "planner.elites=2",
        "planner.horizon=2",
        "planner.context=2",
    ]
    plan_bench.main(args)
    report = json.loads((out / "report.json").read_text())
    acting = report["needs_acting"]
    assert acting["tasks"] == 2 and acting["draw"]["considered"] == 2 + sum(acting["draw"]["left_out"].values())
    for rows in (report, acting):  # `all` at the top level, as it always was; needs_acting beside it
        for method in ("deltaworld_token_cem", "random", "zero_action"):
            assert {"success_rate", "success_ci95", "seconds_per_step"} <= set(rows[method])
            assert len(rows[method]["tasks"]) == 2
    assert [(row["budget"], row.get("skipped", False)) for row in report["budgets"]] == [
        ("4x1/2", False),
        ("8x1/2", False),
    ]
    assert report["budgets"][0]["success_rate"] == acting["deltaworld_token_cem"]["success_rate"]
    assert (out / "budgets.png").is_file() and (out / "gifs" / "needs_acting" / "random.gif").is_file()
    assert report["record"]["policy"] == "smooth"
    with safe_open(str(episode_files(out / "recorded")[0]), framework="pt") as handle:
        assert handle.metadata()["policy"] == "smooth"
    # The diagnosis reads the run: the plan, the recorded actions and random sequences costed from each start.
    capsys.readouterr()
    plan_diagnosis.main(args)
    diagnosis = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert diagnosis["tasks"] == 2 and [t["task"] for t in diagnosis["per_task"]] == [
        t["task"] for t in acting["deltaworld_token_cem"]["tasks"]
    ]
    assert 0.0 <= diagnosis["recorded_beats_random"] <= 1.0
    # Random sequences played in the env: the model's, the real tokens' and the real frame's costs ranked.
    for name in ("cost_tracks_state", "tokens_track_env", "model_tracks_env"):
        assert all(math.isnan(t[name]) or -1.0 <= t[name] <= 1.0 for t in diagnosis["per_task"]), name
    for task in diagnosis["per_task"]:
        assert task["any_reaches"] or not (task["real_cost_picks"] or task["tokens_pick"] or task["model_picks"])
        assert task["random_reaches"] <= float(task["any_reaches"])


def test_task_draw_counts_the_tasks_a_recording_holds(capsys):
    import json

    from benchmarks import task_draw

    task_draw.main(
        ["record.episodes=3", "record.max_steps=20", "eval.episodes=4", "eval.goal_offset=4", "eval.budget=4"]
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["policy"] == "smooth" and summary["needs_acting"] == 4
    assert summary["considered"] == 4 + sum(summary["left_out"].values())
