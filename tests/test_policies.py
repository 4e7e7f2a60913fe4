"""Collection policies (envs.policies): what acts while episodes are recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces
from safetensors import safe_open

from envs.policies import PushTNearBlock, SmoothPolicy, load_policy
from envs.recording import record
from tokenizer.runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BOX = spaces.Box(-2.0, 2.0, (3,), np.float32)


def actions_of(policy, steps: int, seed: int = 0, obs=None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if hasattr(policy, "reset"):
        policy.reset(rng)
    return np.stack([policy(obs, rng) for _ in range(steps)])


def lag_one_correlation(actions: np.ndarray) -> float:
    centred = actions - actions.mean(0)
    return float((centred[1:] * centred[:-1]).sum() / (centred**2).sum())


def test_smooth_actions_drift_inside_the_box_where_random_ones_flicker():
    smooth = actions_of(load_policy("smooth", BOX, {"correlation_steps": 10}), 4000)
    uniform = actions_of(load_policy("random", BOX), 4000)
    assert smooth.dtype == np.float32 and smooth.min() >= -2.0 and smooth.max() <= 2.0
    # An Ornstein-Uhlenbeck step keeps exp(-1/10) = 0.90 of the last value; clipping at the box lowers it a little.
    assert lag_one_correlation(smooth) > 0.8 and abs(lag_one_correlation(uniform)) < 0.1
    assert smooth.std() > 0.8  # spread over the box, not stuck at its centre
    # Seeded: the same stream twice; each episode starts afresh from the generator, not from the last drift.
    policy = SmoothPolicy(BOX)
    np.testing.assert_array_equal(actions_of(policy, 50, seed=1), actions_of(SmoothPolicy(BOX), 50, seed=1))


def test_pusht_targets_stay_near_the_block_and_the_agent():
    policy = load_policy("pusht_near_block", spaces.Box(0.0, 512.0, (2,), np.float32), {"radius": 50.0})
    state = np.array([100.0, 400.0, 300.0, 300.0, 0.4])  # agent far from the block
    targets = actions_of(policy, 500, obs=state)
    assert np.abs(targets - state[2:4]).max() <= 50.0 + 1e-4  # pulled toward the block
    near = np.array([290.0, 310.0, 300.0, 300.0, 0.0])
    targets = actions_of(policy, 500, obs=near)
    assert np.abs(targets - near[:2]).max() <= 100.0 + 1e-4 and targets.std(0).min() > 10
    with pytest.raises(ConfigError, match="obs_type: state"):
        policy(np.zeros((96, 96, 3)), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="2-D target actions"):
        PushTNearBlock(BOX)


def constant_policy(space, value: float = 0.5):
    return lambda obs, rng: np.full(space.shape, value, dtype=np.float32)


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ("nosuch", {}, "one of random, smooth, pusht_near_block or 'package.module:factory'"),
        ("nosuchpkg.mod:make", {}, "cannot load policy"),
        ("smooth", {"correlation": 3}, "does not take record.policy_kwargs"),
        ("smooth", {"scale": -1.0}, "must be positive"),
        ("test_policies:constant_policy", {"colour": 1}, "does not take"),
    ],
)
def test_bad_policies_are_one_line(spec, kwargs, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_policy(spec, BOX, kwargs)
    assert "\n" not in str(caught.value)


def test_a_recording_keeps_the_policy_that_made_it(tmp_path):
    paths = record(
        "deltaworld/Shapes-v0",
        1,
        tmp_path,
        "test_policies:constant_policy",
        max_steps=3,
        policy_kwargs={"value": 0.25},
    )
    with safe_open(str(paths[0]), framework="pt") as handle:
        metadata, actions = handle.metadata(), handle.get_tensor("actions")
    assert metadata["policy"] == "test_policies:constant_policy"
    assert json.loads(metadata["policy_kwargs"]) == {"value": 0.25}
    assert (actions[1:] == 0.25).all()


def test_recording_a_pygame_env_prints_nothing_of_sdls(tmp_path):
    """SDL, which pygame-drawn envs render with, probes for a display and complains on a headless machine; the
    recording command renders to arrays only and keeps it quiet."""
    pytest.importorskip("pygame")
    env = {k: v for k, v in os.environ.items() if k not in ("SDL_VIDEODRIVER", "XDG_RUNTIME_DIR")}
    command = [sys.executable, "-m", "envs.recording", "--env", "Pendulum-v1", "--episodes", "1", "--max-steps", "2"]
    result = subprocess.run(
        [*command, "--out", str(tmp_path / "pendulum")], cwd=REPO, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "XDG_RUNTIME_DIR" not in result.stderr and "error" not in result.stderr.lower()
