"""DeltaWorld inside stable-worldmodel 0.1.1: its solvers plan with our cost model in its World, its datasets
train our models, and its evaluation protocol runs with our planner.

The harness needs torch 2.14.1 + torchvision 0.29.1 (envs/stable_worldmodel.py), so `make test` runs this file in
.venv-swm with DELTAWORLD_SWM_REQUIRED=1, where a missing import fails; the main venv, which lacks the harness,
skips it.
"""

from __future__ import annotations

import os

import gymnasium
import numpy as np
import pytest
import torch

if os.environ.get("DELTAWORLD_SWM_REQUIRED"):
    import stable_worldmodel as swm
else:
    swm = pytest.importorskip("stable_worldmodel", reason="the harness lives in .venv-swm (make swm-install)")

from conftest import micro_tokenizer_config
from envs.stable_worldmodel import BoxClip, DeltaWorldCost, convert_dataset, main
from test_docs import blocks
from test_envs import OnTheModelsDevice, micro_world
from tokenizer.data.episodes import episode_files
from tokenizer.data.registry import DataConfig, build_dataset
from tokenizer.model import Tokenizer
from tokenizer.runtime.errors import ConfigError, DataError, InputError
from tokenizer.runtime.files import load_weights
from worldmodel.objectives import ActionSpace

ENV = "swm/PushT-v1"
SIZE = 32  # the micro tokenizer's frames
BLOCK = 2  # env steps per world-model frame
DT = BLOCK * 0.1  # PushT-v1 steps at 10 Hz
STEPS = 12  # env steps per collected episode
# What stable-worldmodel's PushT evaluation sets from the dataset: the start state, and the goal state it tests.
PUSHT_CALLABLES = [
    {"method": "_set_state", "args": {"state": {"value": "state", "in_dataset": True}}},
    {"method": "_set_goal_state", "args": {"goal_state": {"value": "goal_state", "in_dataset": True}}},
]


@pytest.fixture(scope="session")
def world_model():
    """One micro DeltaWorld with a readout, taking blocks of two 2-D PushT actions, for every test here."""
    torch.manual_seed(0)
    tokenizer = Tokenizer.build(micro_tokenizer_config()).eval()
    return micro_world(tokenizer, actions=ActionSpace(dim=BLOCK * 2), readout=True)


@pytest.fixture(scope="session")
def collected(tmp_path_factory):
    """Two PushT episodes of STEPS steps recorded by World.collect in the folder format, with the WeakPolicy."""
    home = tmp_path_factory.mktemp("swm_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STABLEWM_HOME", str(home))  # load_dataset makes its cache folder there, not in ~
        world = swm.World(ENV, num_envs=1, image_shape=(SIZE, SIZE), max_episode_steps=STEPS)
        world.set_policy(swm.envs.pusht.WeakPolicy(seed=0))
        path = home / "pusht_weak"
        world.collect(path, episodes=2, seed=0, format="folder", progress=False)
        world.close()
        yield path, swm.data.load_dataset(str(path))


def cem_policy(cost: DeltaWorldCost, space, solver=None) -> swm.policy.WorldModelPolicy:
    solver = solver or swm.solver.CEMSolver(cost, batch_size=2, num_samples=6, n_steps=2, topk=3, seed=0)
    return swm.policy.WorldModelPolicy(
        solver=solver,
        config=swm.PlanConfig(horizon=2, receding_horizon=1, action_block=BLOCK),
        process={"action": BoxClip(space)},
    )


def test_cem_plans_pusht_in_a_world_model_policy_on_the_models_device(world_model, monkeypatch):
    world = swm.World(ENV, num_envs=2, image_shape=(SIZE, SIZE), max_episode_steps=20)
    space = world.envs.single_action_space
    cost = DeltaWorldCost(world_model, space, dt=DT)
    parameter = next(world_model.parameters())
    costs = []
    get_cost = cost.get_cost

    def checked(info_dict, candidates):
        # Every tensor get_cost makes must be on the model's device: one made without naming it lands on meta.
        with torch.device("meta"), OnTheModelsDevice(parameter.device, parameter.dtype):
            result = get_cost(info_dict, candidates)
        costs.append(result)
        return result

    monkeypatch.setattr(cost, "get_cost", checked)
    policy = cem_policy(cost, space)
    world.set_policy(policy)
    world.reset(seed=0)
    taken = []
    for _ in range(2 * BLOCK):  # two plans, each applying its first block of BLOCK env steps
        action = policy.get_action(world.infos)
        taken.append(action)
        world.envs.step(action)
    world.close()
    taken = np.stack(taken)
    assert taken.shape == (2 * BLOCK, 2, 2) and np.isfinite(taken).all()
    assert (taken >= space.low).all() and (taken <= space.high).all()
    # Two solves of two CEM iterations, each scoring both envs' 6 candidates at once.
    assert len(costs) == 4 and all(c.shape == (2, 6) and torch.isfinite(c).all() for c in costs)
    assert all(c.std(dim=1).min() > 0 for c in costs)  # the actions change the cost


@pytest.mark.parametrize("name", ["ICEMSolver", "MPPISolver", "PredictiveSamplingSolver"])
def test_the_other_sampling_solvers_plan_with_it(world_model, name):
    world = swm.World(ENV, num_envs=1, image_shape=(SIZE, SIZE), max_episode_steps=20)
    space = world.envs.single_action_space
    cost = DeltaWorldCost(world_model, space, dt=DT, cost="features")
    sizes = {"num_samples": 6} if name == "PredictiveSamplingSolver" else {"num_samples": 6, "n_steps": 2, "topk": 3}
    policy = cem_policy(cost, space, getattr(swm.solver, name)(cost, **sizes))
    world.set_policy(policy)
    world.reset(seed=0)
    action = policy.get_action(world.infos)
    world.close()
    assert action.shape == (1, 2) and np.isfinite(action).all()


def test_gradient_solvers_and_bad_inputs_are_refused_in_one_line(world_model):
    world = swm.World(ENV, num_envs=1, image_shape=(SIZE, SIZE), max_episode_steps=20)
    space = world.envs.single_action_space
    cost = DeltaWorldCost(world_model, space, dt=DT)
    policy = cem_policy(cost, space, swm.solver.GradientSolver(cost, n_steps=1))
    world.set_policy(policy)
    world.reset(seed=0)
    with pytest.raises(ConfigError, match="without gradients.*CEMSolver"):
        policy.get_action(world.infos)
    pixels = torch.as_tensor(world.infos["pixels"])[:, None]
    goal = torch.as_tensor(world.infos["goal"])[:, None]
    world.close()
    with pytest.raises(InputError, match=r"\(B, S, horizon, 4\).*action_block=2"):
        cost.get_cost({"pixels": pixels, "goal": goal}, torch.zeros(1, 1, 2, 2))
    with pytest.raises(InputError, match="uint8 RGB.*no `transform`"):
        cost.get_cost({"pixels": pixels.float(), "goal": goal}, torch.zeros(1, 1, 2, 4))
    with pytest.raises(ConfigError, match="whole number"):
        DeltaWorldCost(world_model, swm.spaces.Box(-1.0, 1.0, shape=(3,)), dt=DT)


def test_a_collected_folder_dataset_becomes_training_clips_with_aligned_actions(collected, tmp_path):
    path, dataset = collected
    out = tmp_path / "episodes"
    main(["convert", "--dataset", str(path), "--env", ENV, "--action-repeat", str(BLOCK), "--out", str(out)])
    files = episode_files(out)
    assert len(files) == 2
    for index, file in enumerate(files):
        episode = load_weights(file, "converted episode")
        source = dataset.load_episode(index)
        kept = (len(source["pixels"]) - 1) // BLOCK + 1
        assert episode["frames"].shape == (kept, 3, SIZE, SIZE) and episode["frames"].dtype == torch.uint8
        torch.testing.assert_close(episode["frames"], source["pixels"][::BLOCK])
        np.testing.assert_allclose(episode["timestamps"].numpy(), np.arange(kept) * DT)
        # Their row t holds the action taken from frame t; ours, the block of actions that led into frame t
        # (PushT's box is [-1, 1], so the scaling keeps the values).
        theirs = source["action"].numpy()
        expected = [theirs[BLOCK * (j - 1) : BLOCK * j].reshape(-1) for j in range(1, kept)]
        np.testing.assert_allclose(episode["actions"][1:].numpy(), np.stack(expected), atol=1e-6)
        assert not episode["actions"][0].any()
        # The physics agrees: an action is the agent's target offset, so the agent moves along the action taken
        # from a frame, more than along the action a step earlier or a step later.
        moved = np.diff(source["pos_agent"].numpy(), axis=0)  # moved[t]: from frame t to t + 1
        along = (moved * theirs[:-1]).sum(-1).mean()
        earlier, later = (moved[1:] * theirs[:-2]).sum(-1).mean(), (moved[:-1] * theirs[1:-1]).sum(-1).mean()
        assert along > max(earlier, later, 0)
    clips = build_dataset(DataConfig(source="episodes", root=str(out), frame_size=SIZE, num_frames=3), "train", 0)
    batch = next(iter(torch.utils.data.DataLoader(clips, batch_size=4)))
    assert batch["frames"].shape == (4, 3, 3, SIZE, SIZE) and batch["actions"].shape == (4, 3, 2 * BLOCK)
    torch.testing.assert_close(batch["timestamps"], torch.tensor([0.0, DT, 2 * DT]).expand(4, -1))
    with pytest.raises(ConfigError, match="already holds"):
        convert_dataset(path, out, ENV, BLOCK)


def test_world_evaluate_from_the_dataset_plans_two_tasks(world_model, collected):
    _, dataset = collected
    world = swm.World(ENV, num_envs=2, image_shape=(SIZE, SIZE), max_episode_steps=STEPS)
    space = world.envs.single_action_space
    world.set_policy(cem_policy(DeltaWorldCost(world_model, space, dt=DT), space))
    result = world.evaluate(
        dataset=dataset,
        episodes_idx=[0, 1],
        start_steps=[0, 2],
        goal_offset=6,
        eval_budget=4,
        callables=PUSHT_CALLABLES,
    )
    world.close()
    assert result["episode_successes"].shape == (2,) and 0 <= result["success_rate"] <= 100


def test_the_readmes_lines_plan_in_a_world(tmp_path, monkeypatch):
    # README's stable-worldmodel block as written, with a micro model and searches small enough for a test.
    (block,) = [block for block in blocks("swm") if block.language == "python"]
    torch.manual_seed(0)
    tokenizer = Tokenizer.build(micro_tokenizer_config()).eval()
    micro_world(tokenizer, actions=ActionSpace(dim=5 * 2), readout=True).save_pretrained(tmp_path / "world")
    sizes = {
        '"runs/pusht_swm_world/final"': repr(str(tmp_path / "world")),
        "num_envs=4, image_shape=(64, 64)": f"num_envs=1, image_shape=({SIZE}, {SIZE}), max_episode_steps=10",
        "num_samples=300, n_steps=30, topk=30": "num_samples=4, n_steps=1, topk=2",
        "episodes=4": "episodes=1",
    }
    code = block.code
    for old, new in sizes.items():
        assert old in code, f"README's block no longer holds {old}"
        code = code.replace(old, new)
    printed = []
    monkeypatch.setattr("builtins.print", lambda *args, **kwargs: printed.append(args))
    exec(compile(code, str(block), "exec"), {"__name__": "docs_example"})
    assert printed[-1] == (0.0,) or printed[-1] == (100.0,)  # one episode's success rate, in percent


def test_draw_tasks_keeps_held_out_episodes_and_goals_inside_them():
    from benchmarks.swm_protocol import EvalSection, draw_tasks

    lengths = [40] * 9 + [30, 12]
    cfg = EvalSection(tasks=8, goal_offset=10, seed=0)
    episodes, starts, candidates = draw_tasks(lengths, [9, 10], cfg)
    assert candidates == (30 - 10) + (12 - 10) and len(episodes) == 8
    assert set(episodes) <= {9, 10} and all(s + 10 < lengths[e] for e, s in zip(episodes, starts))
    assert len(set(zip(episodes, starts))) == 8  # distinct tasks
    assert draw_tasks(lengths, [9, 10], cfg) == (episodes, starts, candidates)  # seeded
    with pytest.raises(ConfigError, match="goal_offset"):
        draw_tasks(lengths, [10], EvalSection(goal_offset=12))


def test_the_protocol_runs_from_nothing(tmp_path, monkeypatch):
    """Micro models on 32 px TwoRoom: the harness collects, everything trains, World.evaluate scores every method on
    the same held-out tasks, and the report says so."""
    import json

    from benchmarks import swm_protocol

    monkeypatch.setenv("STABLEWM_HOME", str(tmp_path / "home"))
    small = "train.max_steps=2,data.val_clips=2,train.batch_size=2"
    out = tmp_path / "protocol"
    args = [
        "--out",
        str(out),
        "collect.episodes=10",
        "collect.max_steps=30",
        "collect.policy=random",
        "frame_size=32",
        f"tokenizer_train.overrides=[{small},feature_pool=8]",
        f"deltaworld.overrides=[{small},data.num_frames=4,eval.context=2,cache.num_clips=4]",
        "eval.tasks=3",
        "eval.goal_offset=10",
        "eval.budget=6",
        "eval.solvers=[4x1/2]",
        "plan.horizon=2",
        "plan.receding_horizon=1",
        "plan.cost_blur=1.0",
        "eval.perfect_model=[4x1/2]",
    ]
    swm_protocol.main(args)
    report = json.loads((out / "report.json").read_text())
    assert report["env"] == "swm/TwoRoom-v1" and report["tasks"] == 3
    assert set(report["methods"]) == {
        "deltaworld_token_cem_4x1/2",
        "perfect_model_token_cem_4x1/2",
        "random",
        "zero_action",
    }
    assert report["plan"]["cost_blur"] == 1.0
    for row in report["methods"].values():
        assert 0 <= row["success_rate"] <= 100 and len(row["successes"]) == 3
        low, high = row["success_ci95"]
        assert 0 <= low <= row["success_rate"] <= high <= 100
    assert all(episode % 10 == 9 for episode in report["task_episodes"])  # held out of training
    # The recorded actions from start to goal fill one plan (10 = 2 blocks x 5), so the model ranks them.
    assert all(0 <= share <= 1 for share in report["recorded_beats_random"].values())
    assert (out / "report.md").read_text().count("| deltaworld_token_cem_4x1/2 |") == 1
    with pytest.raises(ConfigError, match="receding_horizon"):
        swm_protocol.main([*args, "plan.receding_horizon=3"])
    with pytest.raises(ConfigError, match="plan.cost must be"):
        swm_protocol.main([*args, "plan.cost=pixels"])
    with pytest.raises(ConfigError, match="plan.cost_blur is a Gaussian's std"):
        swm_protocol.main([*args, "plan.cost_blur=-1"])
    with pytest.raises(ConfigError, match="budget"):
        swm_protocol.main([*args, "eval.perfect_model=[many]"])
    # A collection folder the harness cannot read is named, and nothing is written over it.
    broken = tmp_path / "broken"
    (broken / "collected").mkdir(parents=True)
    with pytest.raises(DataError, match="cannot read a dataset at .*collected"):
        swm_protocol.main([*args[2:], "--out", str(broken)])
    assert not any((broken / "collected").iterdir()) and not (broken / "report.json").exists()


@pytest.mark.parametrize("cost", ["token", "features"])
def test_the_perfect_model_plays_each_candidate_in_the_env(world_model, cost):
    """PerfectModelCost scores what the env renders: a candidate that ends where the goal image was taken costs
    nothing, whatever the world model would imagine, and every other one costs more."""
    from PIL import Image

    from benchmarks.swm_protocol import PerfectModelCost, SwmProtocolConfig

    cfg = SwmProtocolConfig(env="swm/TwoRoom-v1", frame_size=SIZE, action_block=BLOCK)
    cfg.plan.cost, cfg.plan.horizon = cost, 2
    env = gymnasium.make(cfg.env).unwrapped
    env.reset(seed=0)
    start = np.asarray(env.agent_position, np.float32)
    plans = torch.rand(3, 2, BLOCK * 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plans[0] = 1.0  # the way to the goal: down and right at full speed
    for action in plans[0].reshape(-1, 2).numpy():
        env.step(action)
    goal = np.asarray(Image.fromarray(env.render()).resize((SIZE, SIZE), Image.BILINEAR))
    model = PerfectModelCost(cfg, world_model, env.action_space)
    info = {"state": np.tile(start, (1, 3, 1, 1)), "goal": np.tile(goal, (1, 3, 1, 1, 1, 1))}
    costs = model.get_cost(info, plans[None])
    assert costs.shape == (1, 3) and costs[0, 0] == 0 and (costs[0, 1:] > 0).all()
