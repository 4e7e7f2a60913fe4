"""The Shapes world: env API, determinism, ground truth vs rendering, dynamics, clips."""

from __future__ import annotations

import dataclasses
import importlib
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from omegaconf import OmegaConf

import envs
from envs.shapes import ShapesEnv
from tokenizer.data.shapes import ShapesClips, ShapesConfig, ShapesWorld
from tokenizer.data.shapes_render import (
    AGENT,
    BASE_BRIGHTNESS,
    CIRCLE,
    FOG_COLOR,
    NUM_CLASSES,
    SHAPE_COLORS,
    SQUARE,
    TRIANGLE,
    apparent_color,
    background,
)
from tokenizer.runtime.errors import ConfigError, InputError

CONFIG = ShapesConfig()
# An empty scene (agent only) so the agent is never occluded in tests that track it.
ALONE = ShapesConfig(num_distractors=0)


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (x, y) mean pixel centre."""
    rows, cols = np.nonzero(mask)
    return np.array([cols.mean() + 0.5, rows.mean() + 0.5])


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _gym_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught]


def test_registered_env_passes_check_env() -> None:
    env = gymnasium.make(envs.SHAPES_ENV_ID)
    assert env.spec.max_episode_steps == 100
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert _gym_warnings(caught) == []


def test_direct_env_passes_check_env() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(ShapesEnv(ShapesConfig(frame_size=32)))
    # Without a spec the checker cannot re-make the env; that is its only allowed remark.
    assert [m for m in _gym_warnings(caught) if "not having a spec" not in m] == []


def test_registration_survives_reimport() -> None:
    importlib.reload(envs)
    assert envs.SHAPES_ENV_ID in gymnasium.envs.registry


def test_time_limit_truncates() -> None:
    env = gymnasium.make(envs.SHAPES_ENV_ID, max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(2, np.float32))[3] for _ in range(3)]
    assert flags == [False, False, True]


def test_env_info_contents_and_types() -> None:
    env = ShapesEnv()
    obs, info = env.reset(seed=3)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    assert info["segmentation"].shape == (64, 64) and info["segmentation"].dtype == np.int64
    assert info["depth"].shape == (64, 64) and info["depth"].dtype == np.float32
    assert info["agent_position"].shape == (2,) and info["goal"].shape == (2,)
    assert info["timestamp"] == 0.0
    obs, reward, terminated, truncated, info = env.step(np.array([0.5, -0.5], np.float32))
    assert not terminated and not truncated
    assert reward == pytest.approx(-np.linalg.norm(info["agent_position"] - info["goal"]))
    assert reward == -info["distance"]
    assert info["timestamp"] == pytest.approx(0.1)
    np.testing.assert_array_equal(env.render(), obs)


def test_success_when_agent_is_at_goal() -> None:
    env = ShapesEnv()
    _, info = env.reset(seed=1)
    start = info["agent_position"]
    _, info = env.reset(seed=1, options={"goal": start})
    assert info["distance"] == 0.0 and info["success"]
    _, info = env.reset(seed=1, options={"goal": 1.0 - start})
    assert info["distance"] > CONFIG.success_radius and not info["success"]


def test_goal_option_leaves_scene_unchanged_and_is_validated() -> None:
    env = ShapesEnv()
    plain, _ = env.reset(seed=5)
    with_goal, info = env.reset(seed=5, options={"goal": (0.3, 0.6)})
    np.testing.assert_array_equal(plain, with_goal)
    np.testing.assert_array_equal(info["goal"], [0.3, 0.6])
    with pytest.raises(InputError):
        env.reset(seed=5, options={"goal": (1.5, 0.2)})
    with pytest.raises(InputError):
        env.step(np.zeros(3))


def test_same_seed_same_episode_different_seed_different() -> None:
    actions = np.random.default_rng(0).uniform(-1, 1, size=(20, 2)).astype(np.float32)

    def rollout(seed: int) -> list[np.ndarray]:
        env = ShapesEnv()
        obs, _ = env.reset(seed=seed)
        frames = [obs]
        for action in actions:
            obs, _, _, _, info = env.step(action)
            frames += [obs, info["depth"]]
        return frames

    first, again, other = rollout(11), rollout(11), rollout(12)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])


def test_pixels_agree_with_segmentation_and_depth() -> None:
    """Every shape pixel has its class's fogged colour at its depth (within jitter), nearer than any other class's."""
    env = ShapesEnv(ShapesConfig(num_distractors=6))
    obs, info = env.reset(seed=2)
    world = env.world
    seen = set()
    for _ in range(10):
        seg, depth = info["segmentation"], info["depth"]
        for cls in (AGENT, CIRCLE, SQUARE, TRIANGLE):
            mask = seg == cls
            if not mask.any():
                continue
            seen.add(cls)
            # Shape depths come only from shapes of this class.
            assert set(np.unique(depth[mask])) <= set(world.depths[world.classes == cls].astype(np.float32))
            pixels = obs[mask].astype(float)
            errors = {
                c: np.abs(pixels - apparent_color(SHAPE_COLORS[c], depth[mask], CONFIG.fog_depth)).max(axis=1)
                for c in SHAPE_COLORS
            }
            assert errors[cls].max() <= 2 * CONFIG.color_jitter
            assert all((errors[cls] < errors[c]).all() for c in SHAPE_COLORS if c != cls)
        agent = seg == AGENT
        assert np.all(depth[agent] == np.float32(world.depths[0]))
        assert len({tuple(p) for p in obs[agent]}) == 1  # one flat colour per shape
        obs, _, _, _, info = env.step(env.action_space.sample())
    assert seen == {AGENT, CIRCLE, SQUARE, TRIANGLE}


def test_background_depth_follows_row_gradient() -> None:
    env = ShapesEnv()
    obs, info = env.reset(seed=4)
    seg, depth = info["segmentation"], info["depth"]
    empty_rgb, empty_depth = background(64, CONFIG.background_far_depth, CONFIG.background_near_depth, CONFIG.fog_depth)
    floor = seg == 0
    np.testing.assert_array_equal(depth[floor], empty_depth[floor])
    np.testing.assert_array_equal(obs[floor], empty_rgb[floor])
    rows = empty_depth[:, 0]
    assert np.all(empty_depth == rows[:, None])
    assert np.all(np.diff(rows) < 0)
    assert rows[0] == pytest.approx(CONFIG.background_far_depth, abs=0.1)
    assert rows[-1] == pytest.approx(CONFIG.background_near_depth, abs=0.1)
    # Depth must be readable from the background colour alone: no two rows share a colour.
    assert len({tuple(c) for c in empty_rgb[:, 0]}) > 32


def test_brightness_is_affine_in_depth_for_every_class() -> None:
    """What lets a linear head read depth: R + G + B = BASE_BRIGHTNESS + (fog sum - BASE_BRIGHTNESS) * depth /
    fog_depth."""
    clip = ShapesClips(ShapesConfig(num_distractors=6), num_frames=3, seed=0)[0]
    brightness = clip["frames"].sum(dim=1).numpy().astype(float)
    depth = clip["depth"].numpy()
    expected = BASE_BRIGHTNESS + (sum(FOG_COLOR) - BASE_BRIGHTNESS) * depth / CONFIG.fog_depth
    # Rounding each channel to uint8 moves the sum by at most 1.5.
    assert np.abs(brightness - expected).max() <= 1.5
    assert len(np.unique(clip["segmentation"].numpy())) >= 4


def test_nearer_shape_occludes_farther_one() -> None:
    world = ShapesWorld(ShapesConfig(num_distractors=1), np.random.default_rng(0))
    world.classes[1] = SQUARE
    world.positions[:] = 0.5
    centre = (32, 32)
    for agent_depth, square_depth, visible in [(3.0, 4.0, AGENT), (4.0, 3.0, SQUARE)]:
        world.depths[:] = (agent_depth, square_depth)
        frame = world.render()
        assert frame.segmentation[centre] == visible
        assert frame.depth[centre] == pytest.approx(min(agent_depth, square_depth))
    # The farther shape is smaller: a nearer square hides the whole diamond.
    assert not (frame.segmentation == AGENT).any()


def test_size_and_colour_encode_depth() -> None:
    world = ShapesWorld(ALONE, np.random.default_rng(0))
    world.positions[0] = 0.5
    areas, colours = [], []
    for depth in (ALONE.min_depth, ALONE.max_depth):
        world.depths[0] = depth
        frame = world.render()
        mask = frame.segmentation == AGENT
        areas.append(mask.sum())
        colours.append(frame.rgb[mask][0].astype(float))
    # Area ~ 1/depth^2: 4x between min and max depth, radius 12 px -> 6 px at 64 px.
    assert areas[0] / areas[1] == pytest.approx((ALONE.max_depth / ALONE.min_depth) ** 2, rel=0.15)
    assert areas[0] == pytest.approx(np.pi * 12**2, rel=0.1)
    fog = np.array(FOG_COLOR, float)
    assert np.abs(colours[1] - fog).sum() < np.abs(colours[0] - fog).sum()


def test_agent_moves_in_direction_of_action() -> None:
    env = ShapesEnv(ALONE)
    _, info = env.reset(seed=0, options={"goal": (0.5, 0.5)})
    step = ALONE.agent_speed / ALONE.fps
    for action in ([1.0, 0.0], [0.0, -1.0], [-0.5, 0.5]):
        start, start_seg = info["agent_position"], info["segmentation"]
        _, _, _, _, info = env.step(np.array(action, np.float32))
        np.testing.assert_allclose(info["agent_position"] - start, np.array(action) * step, atol=1e-12)
        pixel_shift = _centroid(info["segmentation"] == AGENT) - _centroid(start_seg == AGENT)
        assert pixel_shift @ np.array(action) > 0
    # Walls stop the agent.
    for _ in range(60):
        _, _, _, _, info = env.step(np.array([1.0, 1.0], np.float32))
    np.testing.assert_array_equal(info["agent_position"], [1.0, 1.0])


def test_distractors_turn_at_random_and_bounce() -> None:
    def count_turns(turn_rate: float) -> tuple[int, float, float]:
        config = ShapesConfig(num_distractors=4, turn_rate=turn_rate)
        world = ShapesWorld(config, np.random.default_rng(1))
        turns, lowest, highest = 0, 1.0, 0.0
        for _ in range(300):
            before = world.directions.copy()
            world.step(np.zeros(2))
            # A bounce only flips signs; any other change of direction is a random turn.
            turns += int((~np.isclose(np.abs(world.directions), np.abs(before)).all(axis=1)).sum())
            lowest, highest = min(lowest, world.positions[1:].min()), max(highest, world.positions[1:].max())
        assert np.allclose(np.linalg.norm(world.directions, axis=1), 1.0)
        return turns, lowest, highest

    turns, lowest, highest = count_turns(CONFIG.turn_rate)
    # 4 shapes x 30 s x 0.5 / s = 60 expected turns.
    assert 30 < turns < 90
    assert 0.0 <= lowest and highest <= 1.0
    assert count_turns(0.0)[0] == 0


def test_goal_frame_draws_agent_at_goal() -> None:
    env = ShapesEnv(ALONE)
    goal = np.array([0.25, 0.7])
    obs, info = env.reset(seed=8, options={"goal": goal})
    agent_colour = obs[info["segmentation"] == AGENT][0]
    goal_image = env.goal_frame()
    at_goal = np.all(goal_image == agent_colour, axis=-1)
    np.testing.assert_allclose(_centroid(at_goal), goal * ALONE.frame_size, atol=0.5)
    # The scene itself is untouched: the agent is still where it was.
    np.testing.assert_array_equal(env.render(), obs)
    assert np.linalg.norm(_centroid(info["segmentation"] == AGENT) - goal * 64) > 5


def test_clip_keys_dtypes_and_shapes() -> None:
    clip = ShapesClips(ShapesConfig(frame_size=32), num_frames=5, seed=0)[0]
    expected = {
        "frames": ((5, 3, 32, 32), torch.uint8),
        "timestamps": ((5,), torch.float32),
        "actions": ((5, 2), torch.float32),
        "segmentation": ((5, 32, 32), torch.int64),
        "depth": ((5, 32, 32), torch.float32),
    }
    assert {k: (tuple(v.shape), v.dtype) for k, v in clip.items()} == expected
    assert int(clip["segmentation"].max()) < NUM_CLASSES and float(clip["depth"].min()) > 0
    batch = torch.utils.data.default_collate([clip, clip])
    assert batch["frames"].shape == (2, 5, 3, 32, 32)


def test_clip_frames_match_env_rendering_channels_first() -> None:
    clip = ShapesClips(CONFIG, num_frames=2, seed=0)[0]
    frames = clip["frames"].permute(0, 2, 3, 1).numpy()
    seg = clip["segmentation"].numpy()
    # Channels first: the agent's pixels (from the map) share one colour in HWC layout.
    assert len({tuple(p) for p in frames[0][seg[0] == AGENT]}) == 1


def test_clips_are_a_function_of_seed_split_and_id() -> None:
    def frames(seed: int = 0, split: str = "train", sample_id: int = 3) -> torch.Tensor:
        return ShapesClips(CONFIG, num_frames=4, seed=seed, split=split)[sample_id]["frames"]

    reference = frames()
    assert torch.equal(reference, frames())
    assert not torch.equal(reference, frames(sample_id=4))
    assert not torch.equal(reference, frames(split="val"))
    assert not torch.equal(reference, frames(seed=1))


def test_timestamps_follow_stride() -> None:
    clips = ShapesClips(CONFIG, num_frames=4, seed=0, num_clips=12, strides=(1, 3))
    seen = set()
    for clip in clips:
        steps = clip["timestamps"].numpy()
        assert steps[0] == 0.0
        gaps = np.diff(steps)
        assert np.allclose(gaps, gaps[0])
        seen.add(round(float(gaps[0]), 6))
    assert seen == {0.1, 0.3}
    np.testing.assert_allclose(
        ShapesClips(CONFIG, 4, 0, strides=(2,))[0]["timestamps"], [0.0, 0.2, 0.4, 0.6], atol=1e-6
    )


def test_actions_align_with_agent_motion() -> None:
    config = dataclasses.replace(ALONE, agent_speed=0.5)
    stride = 2
    clips = ShapesClips(config, num_frames=12, seed=0, strides=(stride,))
    pixels_per_action = config.agent_speed * stride / config.fps * config.frame_size
    aligned, shifted = [], []
    for sample_id in range(10):
        clip = clips[sample_id]
        actions = clip["actions"].numpy()
        assert np.all(actions[0] == 0) and np.all(np.abs(actions) <= 1)
        assert np.abs(actions[1:]).max() > 0.1
        masks = clip["segmentation"].numpy() == AGENT
        for t in range(1, 11):
            if _touches_border(masks[t - 1]) or _touches_border(masks[t]):
                continue
            motion = (_centroid(masks[t]) - _centroid(masks[t - 1])) / pixels_per_action
            aligned.append(np.abs(motion - actions[t]).max())
            shifted.append(np.abs(motion - actions[t + 1]).max())
    assert len(aligned) >= 12
    assert max(aligned) < 0.15
    assert np.mean(shifted) > 2 * np.mean(aligned)


def test_len_and_bounds() -> None:
    assert len(ShapesClips(CONFIG, 2, 0, num_clips=7)) == 7
    unbounded = ShapesClips(CONFIG, 2, 0)
    assert len(unbounded) >= 2**31 - 1
    assert unbounded[10**12]["frames"].shape[0] == 2
    with pytest.raises(IndexError):
        ShapesClips(CONFIG, 2, 0, num_clips=7)[7]
    with pytest.raises(IndexError):
        unbounded[-1]


@pytest.mark.parametrize(
    "make",
    [
        lambda: ShapesEnv(ShapesConfig(frame_size=60)),
        lambda: ShapesEnv(ShapesConfig(min_depth=5.0, max_depth=2.0)),
        lambda: ShapesEnv(ShapesConfig(fog_depth=10.0)),
        lambda: ShapesEnv(ShapesConfig(color_jitter=40)),
        lambda: ShapesEnv(render_mode="human"),
        lambda: ShapesClips(CONFIG, num_frames=0, seed=0),
        lambda: ShapesClips(CONFIG, num_frames=4, seed=-1),
        lambda: ShapesClips(CONFIG, num_frames=4, seed=0, strides=()),
        lambda: ShapesClips(CONFIG, num_frames=4, seed=0, strides=(0,)),
        lambda: ShapesClips({"frame_size": 64}, num_frames=4, seed=0),
    ],
)
def test_user_mistakes_raise_config_error(make) -> None:
    with pytest.raises(ConfigError):
        make()


def test_config_is_an_omegaconf_structured_section() -> None:
    cfg = OmegaConf.merge(OmegaConf.structured(ShapesConfig), {"frame_size": 32, "num_distractors": 1})
    config = OmegaConf.to_object(cfg)
    assert isinstance(config, ShapesConfig) and config.frame_size == 32
    assert ShapesClips(config, num_frames=2, seed=0)[0]["frames"].shape == (2, 3, 32, 32)
