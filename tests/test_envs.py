"""Gymnasium wrappers, DreamEnv, recording and planners on micro models built in-process."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from torch.overrides import TorchFunctionMode

import envs
from conftest import micro_predictor_config, micro_tokenizer_config
from envs.dream import DreamEnv
from envs.goals import Blur, FeatureGoalCost, TokenGoalCost, feature_distance, goal_cost
from envs.planners import MPCAgent, Planner, PlannerConfig, sequence_costs
from envs.recording import main as record_main
from envs.recording import record
from envs.wrappers import DeltaTokenObservation, model_device
from tokenizer.data.episodes import EpisodeClips
from tokenizer.data.registry import DataConfig, build_dataset
from tokenizer.data.shapes import ShapesConfig
from tokenizer.model import Tokenizer
from tokenizer.runtime.errors import CheckpointError, ConfigError, DataError, InputError
from worldmodel.heads import DepthHead, SegmentationHead, TaskHeads
from worldmodel.objectives import ActionSpace, ObjectiveConfig, regression_loss
from worldmodel.readout import READOUT_LOSS, Readout, ReadoutConfig
from worldmodel.rgb_head import RGBHead, RGBHeadConfig
from worldmodel.world import READOUT_FILE, WEIGHTS_FILE, Dream, WorldModelConfig, build_world_model, load_world_model

SIZE = 32  # micro tokenizer: 4x4 patches of width 32
SHAPES = {"config": ShapesConfig(frame_size=SIZE, num_distractors=1)}


# One ActionSpace default shared by every call is safe: nothing mutates it.
def micro_world(tokenizer, model="deltaworld", actions=ActionSpace(dim=2), objective="bom", readout=False):  # noqa: B008
    cfg = WorldModelConfig(
        kind=model,
        predictor=micro_predictor_config([12] if model == "deltaworld" else [4, 4, 4], layer_scale_init=1.0),
        objective=ObjectiveConfig(
            kind=objective if model == "deltaworld" else "deterministic", num_hypotheses=8, selection_chunk=8
        ),
        actions=actions,
        num_samples=2,
        readout=ReadoutConfig(enabled=readout, grid=2, predictor=micro_predictor_config(layer_scale_init=1.0)),
    )
    torch.manual_seed(0)
    world = build_world_model(tokenizer, cfg).eval()
    if world.objective.action_encoder is not None:
        # Zero-initialised action embeddings would make every plan equally good; give actions an effect.
        torch.nn.init.normal_(world.objective.action_encoder.embed.weight, std=1.0)
    return world


def shapes_frames(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    env = envs.ShapesEnv(**SHAPES)
    frame, _ = env.reset(seed=seed)
    frames = [frame]
    for _ in range(count - 1):
        frames.append(env.step(np.array([0.5, -0.5]))[0])
    return np.stack(frames), env.goal_frame()


def test_import_registers_both_envs():
    assert {envs.SHAPES_ENV_ID, envs.DREAM_ENV_ID} <= set(gymnasium.registry)


def test_delta_token_observation_spaces_and_tokens(tokenizer):
    env = DeltaTokenObservation(envs.ShapesEnv(**SHAPES), tokenizer)
    assert env.observation_space.shape == (32,) and env.observation_space.dtype == np.float32
    first, _ = env.reset(seed=0)
    second = env.step(np.array([1.0, 0.0], dtype=np.float32))[0]
    assert env.observation_space.contains(first) and env.observation_space.contains(second)
    assert not np.allclose(first, second)
    # The first token encodes black -> frame 0, exactly as the tokenizer does for a whole clip.
    frame, _ = envs.ShapesEnv(**SHAPES).reset(seed=0)
    tokens, features = tokenizer.tokenize(torch.from_numpy(frame).permute(2, 0, 1)[None, None])
    np.testing.assert_allclose(first, tokens[0, 0].numpy(), atol=1e-5)
    with_features = DeltaTokenObservation(envs.ShapesEnv(**SHAPES), tokenizer, features=True)
    obs, _ = with_features.reset(seed=0)
    assert with_features.observation_space["features"].shape == (16, 32) and with_features.observation_space.contains(
        obs
    )
    np.testing.assert_allclose(obs["features"], features[0, 0].numpy(), atol=1e-5)
    check_env(with_features, skip_render_check=True)


def test_wrapper_needs_images_or_rgb_rendering(tokenizer):
    with pytest.raises(InputError, match="render_mode"):
        DeltaTokenObservation(gymnasium.make("CartPole-v1"), tokenizer)


def test_dream_env_without_a_model_says_what_to_pass():
    with pytest.raises(ConfigError, match="needs a trained action-conditioned world model"):
        gymnasium.make(envs.DREAM_ENV_ID)


def test_dream_env_passes_check_env_and_batches_samples(tokenizer):
    world = micro_world(tokenizer)
    frames, goal = shapes_frames(3)
    env = gymnasium.make(envs.DREAM_ENV_ID, model=world, context=frames, goal_frame=goal, num_samples=3, features=True)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert obs["token"].shape == (3, 32) and obs["features"].shape == (3, 16, 32)
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.0], dtype=np.float32))
    assert env.observation_space.contains(obs) and not terminated and not truncated
    assert info["rewards"].shape == (3,) and reward == pytest.approx(float(info["rewards"].mean()), rel=1e-5)
    goal_features = world.tokenizer.features(torch.from_numpy(goal).permute(2, 0, 1)[None, None])[0, 0]
    np.testing.assert_allclose(
        info["rewards"], -feature_distance(torch.from_numpy(obs["features"]), goal_features).numpy(), rtol=1e-5
    )
    assert obs["token"].std(axis=0).mean() > 1e-5  # best-of-many samples imagine different futures
    # Per-sample actions and a user reward.
    custom = DreamEnv(world, context=frames, num_samples=2, reward_fn=lambda tokens, features: tokens.norm(dim=-1))
    custom.reset(seed=0)
    obs, _, _, _, info = custom.step(np.array([[1.0, 0.0], [-1.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(info["rewards"], np.linalg.norm(obs, axis=-1), rtol=1e-5)
    with pytest.raises(InputError, match="one per sample"):
        custom.step(np.zeros((3, 2), dtype=np.float32))


def test_dream_env_resets_from_a_recorded_episode(tokenizer, tmp_path):
    record("deltaworld/Shapes-v0", 1, tmp_path, max_steps=5, env_kwargs=SHAPES)
    env = DreamEnv(micro_world(tokenizer), episode=tmp_path / "episode_000000.safetensors", context_length=3)
    obs, info = env.reset(seed=0)
    assert obs.shape == (1, 32) and info["time"] == pytest.approx(0.2)
    assert env.step(env.action_space.sample())[4]["time"] == pytest.approx(0.3)


def test_dream_env_over_dinoworld_observes_patches(tokenizer):
    frames, _ = shapes_frames(2)
    env = DreamEnv(micro_world(tokenizer, model="dinoworld"), context=frames)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (1, 16, 32) and env.observation_space.contains(obs)
    assert env.observation_space.contains(env.step(env.action_space.sample())[0])


def test_recording_round_trip_to_training_clips(tmp_path):
    record_main(
        ["--env", "deltaworld/Shapes-v0", "--episodes", "3", "--max-steps", "6", "--out", str(tmp_path), "--seed", "4"]
    )
    files = sorted(tmp_path.glob("episode_*.safetensors"))
    assert len(files) == 3
    cfg = DataConfig(source="episodes", root=str(tmp_path), frame_size=32, num_frames=4)
    clips = build_dataset(cfg, "train", seed=0)
    clip = clips[7]
    assert clip["frames"].shape == (4, 3, 32, 32) and clip["frames"].dtype == torch.uint8
    assert clip["actions"].shape == (4, 2) and clip["timestamps"][0] == 0
    torch.testing.assert_close(clip["timestamps"], torch.arange(4, dtype=torch.float32) * 0.1)
    torch.testing.assert_close(clips[7]["frames"], clip["frames"])  # a clip is a function of its id
    # The recorded actions drove the recorded frames: replaying them reproduces the episode.
    from safetensors.torch import load_file

    episode = load_file(files[0])
    env = gymnasium.make("deltaworld/Shapes-v0")
    env.reset(seed=4 * 1_000_003)
    replayed = [env.step(a.numpy())[0] for a in episode["actions"][1:]]
    np.testing.assert_array_equal(np.stack(replayed), episode["frames"][1:].permute(0, 2, 3, 1).numpy())
    assert (episode["actions"][0] == 0).all() and episode["actions"][1:].abs().max() <= 1
    val = build_dataset(cfg, "val", seed=0)
    assert len(val) == 1 and val[0]["frames"].shape == (4, 3, 32, 32)  # the third episode is held out


def test_episode_source_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.root"):
        build_dataset(DataConfig(source="episodes"), "train", seed=0)
    with pytest.raises(DataError, match="envs.recording"):
        EpisodeClips(tmp_path, 4, 32, 0)
    with pytest.raises(ConfigError, match="cannot make env"):
        record("NoSuchEnv-v9", 1, tmp_path)
    with pytest.raises(ConfigError, match="or null to keep the env's size"):
        record("deltaworld/Shapes-v0", 1, tmp_path, frame_size=0)


def test_sequence_costs_are_one_batched_rollout(tokenizer):
    world = micro_world(tokenizer, objective="deterministic")  # no sampling noise to tell rows apart
    frames, goal = shapes_frames(2)
    frames_t = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]
    dream = world.start(frames_t, torch.tensor([[0.0, 0.1]]), 5)
    goal_features = world.tokenizer.features(torch.from_numpy(goal).permute(2, 0, 1)[None, None])[0, 0]
    # The untrained micro decoder barely reads its token, so the token itself must also carry cost.
    cost = lambda tokens, features: feature_distance(features, goal_features) + tokens.norm(dim=-1)  # noqa: E731
    actions = torch.linspace(-1, 1, 5)[:, None, None].expand(5, 3, 2).contiguous()
    costs = sequence_costs(world, dream, actions, 0.1, cost, torch.Generator().manual_seed(0))
    assert costs.shape == (5,) and torch.isfinite(costs).all() and costs.std() > 0
    # Row r of the batch is the rollout of candidate r alone.
    alone = sequence_costs(world, world.start(frames_t, torch.tensor([[0.0, 0.1]]), 1), actions[2:3], 0.1, cost, None)
    torch.testing.assert_close(alone, costs[2:3], rtol=1e-4, atol=1e-5)


def test_last_step_cost_scores_the_final_imagined_step_alone(tokenizer):
    world = micro_world(tokenizer, objective="deterministic")
    frames, _ = shapes_frames(2)
    dream = world.start(torch.from_numpy(frames).permute(0, 3, 1, 2)[None], torch.tensor([[0.0, 0.1]]), 3)
    actions = torch.rand(3, 3, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scored = []
    cost = lambda tokens, features: scored.append(tokens) or tokens.norm(dim=-1)  # noqa: E731
    last = sequence_costs(world, dream, actions, 0.1, cost, None, last_only=True)
    assert len(scored) == 1
    stepped = dream
    for step in range(3):
        tokens, _, stepped = world.step(stepped, stepped.time + 0.1, actions[:, step])
    torch.testing.assert_close(last, tokens.norm(dim=-1), rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="cost_steps"):
        PlannerConfig(cost_steps="first").validate()


@pytest.mark.parametrize("kind", ["cem", "mppi"])
def test_planner_prefers_the_cheaper_actions(tokenizer, kind):
    world = micro_world(tokenizer)
    frames, goal = shapes_frames(2)
    planner = Planner(
        PlannerConfig(kind=kind, horizon=2, candidates=16, iterations=2, elites=4, context=2), -np.ones(2), np.ones(2)
    )
    # A token-space cost whose optimum is known: the token that action (1, 1) imagines.
    frames_t = torch.from_numpy(frames).permute(0, 3, 1, 2)[None]
    dream = world.start(frames_t, torch.tensor([[0.0, 0.1]]), 1)
    target, _, _ = world.step(dream, dream.time + 0.1, torch.ones(1, 2), None)
    cost = lambda tokens, features: (tokens - target[0]).norm(dim=-1)  # noqa: E731
    plan = planner.plan(world, dream, 0.1, cost, torch.Generator().manual_seed(0))
    assert plan.shape == (2, 2) and plan.abs().max() <= 1
    zeros = torch.zeros(1, 2, 2)
    planned_cost = sequence_costs(world, dream, plan[None], 0.1, cost, None)
    assert planned_cost < sequence_costs(world, dream, zeros, 0.1, cost, None)
    agent = MPCAgent(world, planner, dt=0.1, seed=0)
    agent.reset(goal)
    actions = [agent.act(frame) for frame in frames]
    assert all(a.shape == (2,) and a.dtype == np.float32 and np.abs(a).max() <= 1 for a in actions)
    assert len(agent.frames) == 2


def test_agent_applies_several_planned_steps_and_warm_starts_from_the_rest(tokenizer, monkeypatch):
    world = micro_world(tokenizer)
    frames, goal = shapes_frames(3)
    config = PlannerConfig(horizon=3, candidates=4, iterations=1, elites=2, context=2, receding_horizon=2)
    assert config.steps_applied == 2 and PlannerConfig(horizon=3).steps_applied == 3  # 0: the whole horizon
    planner = Planner(config, -np.ones(2), np.ones(2))
    agent = MPCAgent(world, planner, dt=0.1, seed=0)
    agent.reset(goal)
    with pytest.raises(ConfigError, match="seen no frame"):
        agent.plan_steps(1)
    for frame in frames:
        agent.observe(frame)
    assert len(agent.frames) == 2  # the newest `context` frames
    inits = []
    plan = planner.plan
    monkeypatch.setattr(planner, "plan", lambda *args: inits.append(args[-1]) or plan(*args))
    first = agent.plan_steps(2)
    assert first.shape == (2, 2) and first.dtype == np.float32 and inits == [None]
    kept = agent._plan.clone()
    agent.plan_steps(2)
    # The next search starts from the rest of the plan, its last action repeated for the steps applied.
    torch.testing.assert_close(inits[1], torch.stack([kept[2], kept[2], kept[2]]))
    with pytest.raises(ConfigError, match="1 to planner.horizon"):
        agent.plan_steps(4)
    for bad in (3, 0):
        with pytest.raises(ConfigError, match="receding_horizon"):
            PlannerConfig(horizon=2, receding_horizon=bad).validate()


def planned_along(world, frames: np.ndarray, goal: np.ndarray, cost_kind: str, restart: bool):
    """An agent with a context of 3 over `frames`, planning at each but frame 4 (two frames new at frame 5) -> its
    plans (steps, h, A) and what each plan started from (`dream_tensors`); `restart`: every plan's dream made by
    `WorldModel.start` from all the context's frames."""
    planner = Planner(
        PlannerConfig(horizon=2, candidates=8, iterations=2, elites=2, context=3), -np.ones(2), np.ones(2)
    )
    plan, starts, plans, seen = planner.plan, [], [], []
    planner.plan = lambda world, dream, *rest: starts.extend(dream_tensors(dream)) or plan(world, dream, *rest)
    agent = MPCAgent(world, planner, dt=0.1, seed=0, cost_kind=cost_kind)
    agent.reset(goal)
    if restart:
        context = planner.config.context
        agent.frames.dream = lambda: world.start(
            context_tensor(np.stack(seen[-context:])),
            torch.arange(len(seen[-context:]), dtype=torch.float32)[None] * 0.1,
            1,
        )
    for step, frame in enumerate(frames):
        seen.append(frame)
        agent.observe(frame)
        if step != 4:
            agent.plan_steps(2 if step == 3 else 1)
            plans.append(agent._plan.clone())
    return torch.stack(plans), starts


def dream_tensors(dream: Dream) -> list[torch.Tensor]:
    """A dream's predictor history, newest features, time and readout start."""
    state = [tensor for kv in dream.cache.kv for tensor in kv] + [dream.features, dream.time]
    if dream.readout is not None:
        readout = dream.readout
        state += [tensor for kv in readout.cache.kv for tensor in kv] + [readout.anchor, readout.queries]
    return state


@pytest.mark.parametrize(
    ("model", "readout", "cost_kind"),
    [("deltaworld", True, "token"), ("deltaworld", False, "features"), ("dinoworld", False, "features")],
    ids=["deltaworld token cost", "deltaworld feature cost", "dinoworld"],
)
def test_kept_context_tokens_plan_as_restarting_from_every_frame(model, readout, cost_kind):
    """The agent keeps its context frames' tokens between plans; its plans, and the dreams they start from, are
    those of restarting imagination from every context frame (`WorldModel.start`) at each plan, while the window
    of 3 slides over 7 frames."""
    config = micro_tokenizer_config()
    # At 1e-5 the encoder would barely read its frames: a token taken against the wrong frame would go unseen.
    config.model.layer_scale_init = 1.0
    torch.manual_seed(0)
    world = micro_world(Tokenizer.build(config).eval(), model=model, readout=readout)
    frames, goal = shapes_frames(7)
    plans, starts = planned_along(world, frames, goal, cost_kind, restart=False)
    restarted_plans, restarted_starts = planned_along(world, frames, goal, cost_kind, restart=True)
    # Bitwise equal on the CPUs this runs on; a tolerance because the encoder takes the new frames in a batch of
    # another size than the whole context's, which a BLAS or GPU kernel may block differently.
    torch.testing.assert_close(plans, restarted_plans, rtol=0, atol=1e-5)
    assert len(starts) == len(restarted_starts) > 0
    for kept, restarted in zip(starts, restarted_starts):
        torch.testing.assert_close(kept, restarted, rtol=0, atol=1e-5)


def test_the_agent_encodes_only_the_frames_new_to_its_context(tokenizer, monkeypatch):
    """Once a context of 3 is full, a plan runs the DeltaTok encoder on two frame pairs, in one batch: the newest
    frame against the one before it, and the window's new first frame against the black frame."""
    world = micro_world(tokenizer, readout=True)
    frames, goal = shapes_frames(6)
    planner = Planner(
        PlannerConfig(horizon=2, candidates=4, iterations=1, elites=2, context=3), -np.ones(2), np.ones(2)
    )
    agent = MPCAgent(world, planner, dt=0.1)
    agent.reset(goal)
    with torch.no_grad():
        features = world.tokenizer.features(context_tensor(frames))[0]
        black = world.tokenizer.black_features(1, SIZE, SIZE, features.device)[0]
    encoded = []
    encode = world.tokenizer.deltatok.encode
    monkeypatch.setattr(
        world.tokenizer.deltatok,
        "encode",
        lambda prev, nxt, rope: encoded.append((prev, nxt)) or encode(prev, nxt, rope),
    )
    for step, frame in enumerate(frames):
        encoded.clear()
        agent.act(frame)
        if step == 0:
            pairs = [(black, features[0])]
        elif step < 3:
            pairs = [(features[step - 1], features[step])]
        else:
            pairs = [(black, features[step - 2]), (features[step - 1], features[step])]
        assert len(encoded) == 1 and len(encoded[0][1]) == len(pairs), step
        for row, (prev, nxt) in enumerate(pairs):
            torch.testing.assert_close(encoded[0][0][row], prev)
            torch.testing.assert_close(encoded[0][1][row], nxt)


def test_planning_config_errors(tokenizer):
    with pytest.raises(ConfigError, match="elites"):
        Planner(PlannerConfig(candidates=4, elites=8), -np.ones(2), np.ones(2))
    with pytest.raises(ConfigError, match="continuous actions"):
        MPCAgent(
            micro_world(tokenizer, actions=ActionSpace()), Planner(PlannerConfig(), -np.ones(2), np.ones(2)), dt=0.1
        )


def context_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2)[None]


def test_imagining_decodes_only_when_asked(tokenizer):
    world = micro_world(tokenizer, objective="deterministic", readout=True)
    frames, _ = shapes_frames(2)
    dream = world.start(context_tensor(frames), torch.tensor([[0.0, 0.1]]), 3)
    tokens, features, stepped = world.step(dream, dream.time + 0.1, torch.ones(3, 2))
    first, lazy = world.imagine(dream, dream.time + 0.1, torch.ones(3, 2))
    second, lazy = world.imagine(lazy, lazy.time + 0.1, torch.ones(3, 2))
    assert len(lazy.pending) == 2 and torch.equal(lazy.features, dream.features)  # nothing decoded yet
    torch.testing.assert_close(first, tokens)
    _, _, stepped = world.step(stepped, stepped.time + 0.1, torch.ones(3, 2))
    caught_up = world.decoded(lazy)
    assert caught_up.pending == ()
    torch.testing.assert_close(caught_up.features, stepped.features)
    assert world.summary(lazy).shape == (3, 4, 32)  # 2x2 cells of the 4x4 patch grid


def test_readout_learns_summaries_from_tokens(tokenizer):
    world = micro_world(tokenizer, objective="deterministic", readout=True)
    frames, _ = shapes_frames(4)
    clip = context_tensor(frames)
    times = torch.tensor([[0.0, 0.1, 0.2, 0.3]])
    tokens, features = world.tokenizer.tokenize(clip)
    summaries = world.readout.summarize(features, world.tokenizer.grid(clip))
    assert summaries.shape == (1, 4, 4, 32)
    torch.testing.assert_close(summaries[0, 0, 0], features[0, 0].view(4, 4, 32)[:2, :2].mean(dim=(0, 1)))
    optimizer = torch.optim.Adam(world.readout.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = world.readout.loss(tokens, summaries, times)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    # Reading frame 2 step by step from frame 0's anchor gives the training path's answer.
    state = world.readout.start(summaries[:, 0], times[:, 0])
    for t in (1, 2):
        state = world.readout.append(state, tokens[:, t], times[:, t])
    with torch.no_grad():
        read = world.readout.read(state, times[:, 2])
        teacher_forced = world.readout.predict(tokens, summaries, times)
    assert read.shape == (1, 4, 32) and teacher_forced.shape == (1, 3, 4, 32)
    torch.testing.assert_close(read, teacher_forced[:, 1], rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="summaries must be"):
        world.readout.loss(tokens, summaries[:, :, :2], times)


def test_readout_queries_read_their_own_anchor_cell():
    """Each imagined cell here is minus its anchor cell: a per-cell map the anchored queries learn in a few
    steps, where queries knowing only their cell stayed near the anchor (0.84 of copying it, 3 seeds)."""
    torch.manual_seed(0)
    readout = Readout(ReadoutConfig(enabled=True, grid=2, predictor=micro_predictor_config(layer_scale_init=1.0)), 32)
    generator = torch.Generator().manual_seed(1)
    times = torch.tensor([[0.0, 0.1, 0.2]]).expand(16, -1)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        anchor = torch.randn(16, 1, 4, 32, generator=generator)
        return torch.randn(16, 3, 32, generator=generator), torch.cat((anchor, -anchor, -anchor), dim=1)

    optimizer = torch.optim.Adam(readout.parameters(), lr=3e-3)
    for _ in range(150):
        loss = readout.loss(*batch(), times)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tokens, summaries = batch()
    with torch.no_grad():
        copy_anchor = regression_loss(summaries[:, :1].expand(-1, 2, -1, -1), summaries[:, 1:], *READOUT_LOSS).mean()
        assert readout.loss(tokens, summaries, times) < 0.3 * copy_anchor


def test_token_cost_never_decodes(tokenizer, monkeypatch):
    world = micro_world(tokenizer, readout=True)
    frames, goal = shapes_frames(2)
    cost = goal_cost(world, goal)
    assert isinstance(cost, TokenGoalCost) and cost.goal.shape == (4, 32)
    assert isinstance(goal_cost(world, goal, "features"), FeatureGoalCost)
    assert isinstance(goal_cost(micro_world(tokenizer), goal), FeatureGoalCost)
    with pytest.raises(ConfigError, match="has none"):
        goal_cost(micro_world(tokenizer), goal, "token")
    with pytest.raises(ConfigError, match="not one of"):
        goal_cost(world, goal, "pixels")
    dream = world.start(context_tensor(frames), torch.tensor([[0.0, 0.1]]), 4)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the token cost decoded a frame")

    monkeypatch.setattr(world.tokenizer, "decode", no_decoding)
    costs = sequence_costs(world, dream, torch.rand(4, 3, 2) * 2 - 1, 0.1, cost, torch.Generator().manual_seed(0))
    assert costs.shape == (4,) and torch.isfinite(costs).all()
    agent = MPCAgent(
        world,
        Planner(PlannerConfig(horizon=2, candidates=8, iterations=1, elites=2, context=2), -np.ones(2), np.ones(2)),
        dt=0.1,
    )
    agent.reset(goal)
    assert isinstance(agent.cost, TokenGoalCost) and agent.act(frames[0]).shape == (2,)
    with pytest.raises(AssertionError, match="decoded"):
        sequence_costs(world, dream, torch.zeros(4, 1, 2), 0.1, goal_cost(world, goal, "features"), None)


def test_a_blurred_cost_counts_a_near_miss_below_a_far_one():
    """On raw maps an object one patch from its goal place costs what one across the frame costs; smoothed maps
    (cost_blur) order them by distance, and a blur of 0 is the raw cost."""
    grid, dim = (8, 8), 3

    def frame_with_object_at(row: int, col: int) -> torch.Tensor:
        features = torch.zeros(grid[0] * grid[1], dim)
        features[row * grid[1] + col] = torch.tensor([1.0, -2.0, 0.5])
        return features

    goal = frame_with_object_at(2, 2)
    imagined = torch.stack([frame_with_object_at(2, 3), frame_with_object_at(6, 7), goal])
    raw = FeatureGoalCost(goal).of_features(None, imagined, grid)
    assert raw[0] == raw[1] > raw[2] == 0
    assert torch.equal(FeatureGoalCost(goal, Blur(grid, (0.0, 0.0))).of_features(None, imagined, grid), raw)
    blurred = FeatureGoalCost(goal, Blur(grid, (1.0, 1.0))).of_features(None, imagined, grid)
    assert blurred[2] == 0 < blurred[0] < blurred[1]


def test_cost_blur_reaches_both_costs_in_their_own_cells(tokenizer):
    """A blur in backbone patches smooths the patch maps by that much and the readout's coarser summary cells by
    the same distance in cells; a negative or NaN blur is refused."""
    world = micro_world(tokenizer, readout=True)  # 4x4 patches, 2x2 summary cells
    goal = shapes_frames(1)[1]
    feature_cost = goal_cost(world, goal, "features", blur=2.0)
    token_cost = goal_cost(world, goal, "token", blur=2.0)
    assert feature_cost.blur.sigma == (2.0, 2.0) and token_cost.blur.sigma == (1.0, 1.0)
    assert not torch.equal(token_cost.goal, goal_cost(world, goal, "token").goal)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match="cost_blur"):
            goal_cost(world, goal, blur=bad)
        with pytest.raises(ConfigError, match="cost_blur"):
            PlannerConfig(cost_blur=bad).validate()
    agent = MPCAgent(
        world,
        Planner(
            PlannerConfig(horizon=2, candidates=4, iterations=1, elites=2, context=1, cost_blur=2.0),
            -np.ones(2),
            np.ones(2),
        ),
        dt=0.1,
    )
    agent.reset(goal)
    assert agent.cost.blur.sigma == (1.0, 1.0)


def test_readout_is_saved_and_optional_when_loading(tokenizer, tmp_path):
    world = micro_world(tokenizer, readout=True)
    world.save_pretrained(tmp_path / "wm")
    loaded = load_world_model(tmp_path / "wm")
    for ours, theirs in zip(world.readout.state_dict().values(), loaded.readout.state_dict().values()):
        assert torch.equal(ours, theirs)
    # A released-style bare weights file has no readout: it loads without one and plans with the feature cost.
    bare = load_world_model(tmp_path / "wm" / WEIGHTS_FILE, loaded.tokenizer, world.config)
    assert bare.readout is None and world.config.readout.enabled
    assert isinstance(goal_cost(bare, shapes_frames(1)[1]), FeatureGoalCost)
    (tmp_path / "wm" / READOUT_FILE).unlink()
    with pytest.raises(CheckpointError, match="readout"):
        load_world_model(tmp_path / "wm")


def test_a_readout_saved_before_anchored_queries_says_how_to_load_it(tokenizer, tmp_path):
    world = micro_world(tokenizer, readout=True)
    world.config.readout.anchor_queries = False
    world.readout = Readout(world.config.readout, tokenizer.dim)
    world.save_pretrained(tmp_path / "wm")
    config = tmp_path / "wm" / "config.yaml"
    saved = config.read_text()
    assert "anchor_queries: false" in saved
    config.write_text(saved.replace("  anchor_queries: false\n", ""))  # as written before the option existed
    with pytest.raises(CheckpointError, match="anchor_queries: false"):
        load_world_model(tmp_path / "wm")
    config.write_text(saved)
    assert load_world_model(tmp_path / "wm").readout.anchor_proj is None


def test_dream_env_renders_the_samples_and_records_video(tokenizer, tmp_path):
    world = micro_world(tokenizer, readout=True)
    frames, goal = shapes_frames(3)
    env = gymnasium.make(
        envs.DREAM_ENV_ID, model=world, context=frames, goal_frame=goal, num_samples=3, render_mode="rgb_array"
    )
    check_env(env.unwrapped)
    env.reset(seed=0)
    picture = env.render()
    assert picture.dtype == np.uint8 and picture.shape == (2 * SIZE, 2 * SIZE, 3)  # 3 samples on a 2x2 grid
    env.step(np.array([1.0, 0.0], dtype=np.float32))
    assert len(env.unwrapped._dream.pending) == 1  # the token reward did not decode
    assert env.render().shape == picture.shape and env.unwrapped._dream.pending == ()
    recorded = gymnasium.wrappers.RecordVideo(
        gymnasium.make(envs.DREAM_ENV_ID, model=world, context=frames, num_samples=3, render_mode="rgb_array"),
        str(tmp_path / "video"),
        disable_logger=True,
    )
    recorded.reset(seed=0)
    for _ in range(3):
        recorded.step(recorded.action_space.sample())
    recorded.close()
    assert list((tmp_path / "video").glob("*.mp4"))
    with pytest.raises(ConfigError, match="render_mode"):
        DreamEnv(world, context=frames, render_mode="human")


def test_dream_env_renders_the_samples_in_rgb_with_an_rgb_head(tokenizer, tmp_path):
    world = micro_world(tokenizer)
    frames, _ = shapes_frames(3)
    torch.manual_seed(0)
    rgb = RGBHead(
        tokenizer.dim, tokenizer.backbone.feature_norm, RGBHeadConfig(32, 1, 2, 64, patch_size=8, image_size=SIZE)
    )
    TaskHeads(SegmentationHead(tokenizer.dim, 5), rgb=rgb).save(tmp_path / "heads")
    pictures, dreams = {}, {}
    for name, heads in (("rgb", tmp_path / "heads"), ("seg", TaskHeads(SegmentationHead(tokenizer.dim, 5)))):
        env = DreamEnv(world, context=frames, num_samples=3, render_mode="rgb_array", heads=heads)
        env.reset(seed=0)
        env.step(np.array([1.0, 0.0], dtype=np.float32))
        pictures[name] = env.render()
        dreams[name] = env._dream
    # The RGB head is preferred over the segmentation head the folder also holds: each sample drawn as it gives it.
    expected = rgb.render(dreams["rgb"].features.float(), dreams["rgb"].grid).permute(0, 2, 3, 1).numpy()
    picture = pictures["rgb"]
    assert picture.shape == (2 * SIZE, 2 * SIZE, 3)
    cells = [picture[:SIZE, :SIZE], picture[:SIZE, SIZE:], picture[SIZE:, :SIZE]]
    for cell, sample in zip(cells, expected):
        assert np.array_equal(cell, sample)
    assert not np.array_equal(pictures["rgb"], pictures["seg"])
    with pytest.raises(ConfigError, match="neither an RGB nor a segmentation head"):
        DreamEnv(
            world, context=frames, render_mode="rgb_array", heads=TaskHeads(depth=DepthHead(tokenizer.dim, 1.0, 16.0))
        )


def test_delta_token_observation_passes_render_through(tokenizer):
    env = DeltaTokenObservation(envs.ShapesEnv(render_mode="rgb_array", **SHAPES), tokenizer)
    env.reset(seed=0)
    assert env.render().shape == (SIZE, SIZE, 3)


def test_an_env_that_cannot_render_names_the_extra(tmp_path):
    try:
        import pygame  # noqa: F401

        pytest.skip("pygame is installed: Pendulum-v1 renders")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match=r"\.\[gym-render\]"):
        record("Pendulum-v1", 1, tmp_path, max_steps=2)


class OnTheModelsDevice(TorchFunctionMode):
    """Fails the first torch call whose result is not on `device` in `dtype` (floats).

    Run under `torch.device("meta")`: a tensor made without naming a device lands on meta and is caught here,
    where with the model on a GPU it would have been a CPU tensor mixed into the GPU's work.
    """

    def __init__(self, device: torch.device, dtype: torch.dtype):
        super().__init__()
        self.device, self.dtype = device, dtype

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else (result,):  # topk and friends return tuples
            if isinstance(value, torch.Tensor):
                assert value.device == self.device, (
                    f"{func} made a tensor on {value.device}, the model is on {self.device}"
                )
                assert not value.is_floating_point() or value.dtype == self.dtype, (
                    f"{func} made {value.dtype}, the model is {self.dtype}"
                )
        return result


@pytest.mark.parametrize("readout", [False, True], ids=["feature cost", "token cost"])
def test_planning_and_dreaming_make_every_tensor_on_the_models_device(tokenizer, readout):
    world = micro_world(tokenizer, readout=readout)
    frames, goal = shapes_frames(2)
    planner = Planner(
        PlannerConfig(horizon=2, candidates=4, iterations=2, elites=2, context=2), -np.ones(2), np.ones(2)
    )
    parameter = next(world.parameters())
    with torch.device("meta"), OnTheModelsDevice(parameter.device, parameter.dtype):
        agent = MPCAgent(world, planner, dt=0.1)
        agent.reset(goal)
        actions = [agent.act(frame) for frame in frames]
        env = DreamEnv(world, context=frames, goal_frame=goal, num_samples=2, features=True)
        env.reset(seed=0)
        env.step(np.ones(2, dtype=np.float32))
        env.step(np.zeros((2, 2), dtype=np.float32))
        rewardless = DreamEnv(world, context=frames, timestamps=[0.0, 0.2])
        rewardless.reset(seed=0)
        rewardless.step(np.ones(2, dtype=np.float32))
        wrapped = DeltaTokenObservation(envs.ShapesEnv(**SHAPES), tokenizer, features=True, frame_size=SIZE)
        wrapped.reset(seed=0)
        wrapped.step(np.ones(2, dtype=np.float32))
    assert all(a.shape == (2,) and np.isfinite(a).all() for a in actions)
    # The model draws its samples' noise with these generators, on its own device.
    assert agent.generator.device == env._generator.device == model_device(world)


def test_device_moves_the_model_and_none_leaves_it(tokenizer, monkeypatch):
    world = micro_world(tokenizer)
    frames, _ = shapes_frames(2)
    moves = []
    move = world.to
    monkeypatch.setattr(world, "to", lambda *args, **kwargs: moves.append(args) or move(*args, **kwargs))
    planner = Planner(
        PlannerConfig(horizon=1, candidates=2, iterations=1, elites=1, context=2), -np.ones(2), np.ones(2)
    )
    MPCAgent(world, planner, dt=0.1)
    DreamEnv(world, context=frames)
    assert moves == []
    agent = MPCAgent(world, planner, dt=0.1, device="cpu")
    env = DreamEnv(world, context=frames, device=torch.device("cpu"))
    assert moves == [("cpu",), (torch.device("cpu"),)]
    assert agent.device == env.device == torch.device("cpu")


@pytest.mark.parametrize("model", ["deltaworld", "dinoworld"])
def test_observing_the_imagined_tokens_gives_the_imagined_dream(tokenizer, model):
    """`observe` puts given tokens into the history as `imagine` puts its own: the same features, summary and next
    imagined frame."""
    world = micro_world(tokenizer, model, readout=model == "deltaworld")
    frames = torch.from_numpy(shapes_frames(3)[0]).permute(0, 3, 1, 2)[None]
    dream = world.start(frames, torch.tensor([[0.0, 0.1, 0.2]]), 2)
    time, action = torch.full((2,), 0.3), torch.ones(2, 2)
    tokens, imagined = world.imagine(dream, time, action, torch.Generator().manual_seed(0))
    observed = world.observe(dream, time, tokens)
    torch.testing.assert_close(world.decoded(observed).features, world.decoded(imagined).features)
    if model == "deltaworld":
        torch.testing.assert_close(world.summary(observed), world.summary(imagined))
    later = torch.full((2,), 0.4)
    torch.testing.assert_close(
        world.imagine(observed, later, action, torch.Generator().manual_seed(1))[0],
        world.imagine(imagined, later, action, torch.Generator().manual_seed(1))[0],
    )
