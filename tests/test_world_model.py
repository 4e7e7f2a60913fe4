"""Predictor, objectives, DeltaWorld and DINOWorld on tiny random models."""

from __future__ import annotations

import pytest
import torch

from conftest import micro_predictor_config, micro_tokenizer_config, random_frames
from tokenizer.runtime.errors import CheckpointError, InputError
from worldmodel.objectives import ActionSpace, ObjectiveConfig
from worldmodel.predictor import Predictor, PredictorConfig, causal_mask
from worldmodel.training import WorldModelTask, rollout_losses
from worldmodel.world import WorldModelConfig, build_world_model, load_world_model

PREDICTOR = micro_predictor_config()
# LayerScale at 1 so attention visibly moves the output (at the default 1e-5 it hides below tolerances).
VISIBLE = micro_predictor_config(num_layers=2, layer_scale_init=1.0)


# One ActionSpace default shared by every call is safe: nothing mutates it.
def world(tokenizer, kind="bom", actions=ActionSpace(), model="deltaworld", **objective):  # noqa: B008
    predictor = PREDICTOR if model == "deltaworld" else micro_predictor_config([4, 4, 4])
    cfg = WorldModelConfig(
        kind=model,
        predictor=predictor,
        objective=ObjectiveConfig(kind=kind, num_hypotheses=16, selection_chunk=5, sampling_steps=3, **objective),
        actions=actions,
        num_samples=3,
    )
    torch.manual_seed(0)
    return build_world_model(tokenizer, cfg)


def clip(batch=2, time=5, seed=0):
    frames = random_frames(batch, time, seed=seed)
    timestamps = torch.arange(time, dtype=torch.float32).expand(batch, -1) * 0.1
    actions = torch.randn(batch, time, 2, generator=torch.Generator().manual_seed(seed))
    return frames, timestamps, actions


def train_steps(w, frames, timestamps, actions=None, steps=30, lr=3e-3):
    optimizer = torch.optim.Adam(w.objective.parameters(), lr=lr)
    inputs = w.training_inputs(frames, timestamps, actions)
    losses = []
    for step in range(steps):
        loss, _ = w.objective(**inputs, generator=torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["bom", "flow", "diffusion", "deterministic"])
def test_each_objective_trains_and_imagines(tokenizer, kind):
    w = world(tokenizer, kind)
    frames, timestamps, _ = clip()
    losses = train_steps(w, frames, timestamps)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5, losses
    w.eval()
    out = w.rollout(frames, timestamps, context=2, horizon=3, num_samples=4, generator=torch.Generator().manual_seed(0))
    assert out["features"].shape == (2, 4, 3, 16, 32) and out["tokens"].shape == (2, 4, 3, 32)
    assert out["targets"].shape == (2, 3, 16, 32) and out["context"].shape == (2, 2, 16, 32)
    again = w.rollout(
        frames, timestamps, context=2, horizon=3, num_samples=4, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(out["features"], again["features"])
    spread = out["tokens"].std(dim=1).mean().item()
    if kind == "deterministic":
        assert spread < 1e-6
    else:
        assert spread > 1e-4  # generative objectives imagine different futures


def test_bom_picks_the_best_hypothesis_and_chunking_does_not_matter(tokenizer):
    w = world(tokenizer, "bom")
    frames, timestamps, _ = clip()
    inputs = w.training_inputs(frames, timestamps, None)
    hypotheses = torch.randn(2, 4, 16, 32, generator=torch.Generator().manual_seed(3)) * 0.5
    whole, preds = w.objective.loss_with_hypotheses(**inputs, hypotheses=[hypotheses])
    chunked, _ = w.objective.loss_with_hypotheses(**inputs, hypotheses=list(hypotheses.split(5, dim=2)))
    torch.testing.assert_close(whole, chunked)
    single = [
        w.objective.loss_with_hypotheses(**inputs, hypotheses=[hypotheses[:, :, i : i + 1]])[0].item()
        for i in range(16)
    ]
    assert whole.item() <= min(single) + 1e-6
    assert preds.shape == (2, 4, 32)


def test_incremental_history_matches_full_recomputation(tokenizer):
    torch.manual_seed(0)
    predictor = Predictor(VISIBLE, 32).eval()
    history = torch.randn(2, 5, 32)
    times = torch.rand(2, 5).cumsum(1)
    query, qtime = torch.randn(2, 1, 32), times[:, -1:] + 0.3
    full = predictor(query, qtime, history, times)
    cache = predictor.encode_history(history[:, :2], times[:, :2])
    for t in range(2, 5):
        cache = cache.append(predictor.encode_history(history[:, t : t + 1], times[:, t : t + 1]))
    torch.testing.assert_close(predictor.attend(query, qtime, cache), full)


def test_causal_mask_hides_the_future():
    mask = causal_mask(torch.arange(1, 4), torch.arange(3))
    assert mask.tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    torch.manual_seed(0)
    predictor = Predictor(VISIBLE, 32).eval()
    history, times = torch.randn(1, 3, 32), torch.arange(3.0)[None]
    query, qtimes = torch.randn(1, 3, 32), torch.arange(1.0, 4)[None]
    before = predictor(query, qtimes, history, times, mask)
    changed = history.clone()
    changed[:, 2] += 10.0  # the last history token is visible only to the last query
    after = predictor(query, qtimes, changed, times, mask)
    torch.testing.assert_close(before[:, :2], after[:, :2])
    assert not torch.allclose(before[:, 2], after[:, 2])


@pytest.mark.parametrize(
    "space, actions",
    [
        (ActionSpace(dim=2), torch.randn(2, 5, 2)),
        (ActionSpace(num_actions=3), torch.randint(0, 3, (2, 5))),
    ],
)
def test_actions_condition_the_prediction_of_the_next_frame(tokenizer, space, actions):
    w = world(tokenizer, "deterministic", actions=space)
    with torch.no_grad():
        w.objective.action_encoder.embed.weight.normal_()  # trained weights differ from the zero init
    frames, timestamps, _ = clip()
    w.eval()
    first = w.rollout(frames, timestamps, 3, 2, num_samples=1, actions=actions)["tokens"]
    other = actions.clone()
    other[:, 4] = (other[:, 4] + 1) if space.num_actions == 0 else (other[:, 4] + 1) % 3
    second = w.rollout(frames, timestamps, 3, 2, num_samples=1, actions=other)["tokens"]
    torch.testing.assert_close(first[:, :, 0], second[:, :, 0])  # frame 3 used actions[:, 3] only
    assert not torch.allclose(first[:, :, 1], second[:, :, 1])  # frame 4 follows actions[:, 4]
    with pytest.raises(InputError, match="action-conditioned"):
        w.rollout(frames, timestamps, 3, 2, num_samples=1)


def test_action_conditioned_training_uses_actions(tokenizer):
    w = world(tokenizer, "bom", actions=ActionSpace(dim=2))
    frames, timestamps, actions = clip()
    losses = train_steps(w, frames, timestamps, actions, steps=5)
    assert w.objective.action_encoder.embed.weight.abs().sum() > 0 and all(map(lambda x: x == x, losses))


def test_dinoworld_predicts_every_patch(tokenizer):
    w = world(tokenizer, "deterministic", model="dinoworld")
    frames, timestamps, _ = clip()
    inputs = w.training_inputs(frames, timestamps, None)
    assert inputs["history"].shape == (2, 4 * 16, 32) and inputs["targets"].shape == (2, 4, 16, 32)
    losses = train_steps(w, frames, timestamps, steps=20)
    assert losses[-1] < losses[0]
    out = w.eval().rollout(frames, timestamps, 2, 3, num_samples=2)
    assert out["features"].shape == (2, 2, 3, 16, 32)


def test_rollout_rejects_bad_windows(tokenizer):
    w = world(tokenizer).eval()
    frames, timestamps, _ = clip(time=4)
    for context, horizon in ((3, 2), (2, 0), (0, 2)):
        with pytest.raises(InputError):
            w.rollout(frames, timestamps, context, horizon)
    with pytest.raises(InputError, match="timestamps"):
        w.rollout(frames, timestamps[:, :3], 2, 1)


@pytest.mark.parametrize("model, kind", [("deltaworld", "flow"), ("dinoworld", "deterministic")])
def test_save_load_round_trip(tokenizer, tmp_path, model, kind):
    w = world(tokenizer, kind, model=model).eval()
    w.save_pretrained(tmp_path / "w")
    loaded = load_world_model(tmp_path / "w")
    frames, timestamps, _ = clip()
    a = w.rollout(frames, timestamps, 2, 2, 2, generator=torch.Generator().manual_seed(1))["features"]
    b = loaded.rollout(frames, timestamps, 2, 2, 2, generator=torch.Generator().manual_seed(1))["features"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_released_world_layout_and_mismatch(tokenizer, tmp_path):
    w = world(tokenizer, "bom")
    state = w.objective.state_dict()
    assert all(key.startswith("predictor.") for key in state)
    torch.save({"state_dict": dict(state)}, tmp_path / "pytorch_model.bin")
    loaded = load_world_model(tmp_path / "pytorch_model.bin", tokenizer, w.config)
    assert torch.equal(loaded.objective.predictor.head.weight, w.objective.predictor.head.weight)
    bigger = WorldModelConfig(
        predictor=PredictorConfig(hidden_size=64, num_layers=1, num_heads=2, rope_axis_sizes=[28])
    )
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_world_model(tmp_path / "pytorch_model.bin", tokenizer, bigger)


@pytest.mark.parametrize("model", ["deltaworld", "dinoworld"])
def test_predict_imagines_past_the_clip_as_rollout_does_within_it(tokenizer, model):
    """predict() on the first 3 frames, at the clip's own spacing, imagines what rollout() imagines for frames 4-5."""
    w = world(tokenizer, "flow", ActionSpace(dim=2), model).eval()
    frames, timestamps, actions = clip()
    inside = w.rollout(
        frames, timestamps, context=3, horizon=2, actions=actions, generator=torch.Generator().manual_seed(3)
    )
    future = w.predict(
        frames[:, :3], timestamps[:, :3], horizon=2, actions=actions[:, 3:], generator=torch.Generator().manual_seed(3)
    )
    assert future["features"].shape == inside["features"].shape == (2, 3, 2, 16, 32)
    assert torch.allclose(future["features"], inside["features"], atol=1e-6)
    assert torch.allclose(future["times"], timestamps[:, 3:])
    with pytest.raises(InputError, match="pass dt"):
        w.predict(frames[:, :1], timestamps[:, :1], horizon=1, actions=actions[:, :1])
    assert w.predict(frames[:, :1], timestamps[:, :1], horizon=2, dt=0.5, actions=actions[:, :2])["times"][
        0
    ].tolist() == [0.5, 1.0]
    with pytest.raises(InputError, match="actions must be"):
        w.predict(frames[:, :3], timestamps[:, :3], horizon=2, actions=actions)


def test_training_validation_scores_the_listed_horizons_of_one_rollout(tokenizer):
    """eval.horizons [2] scores the second imagined frame of the rollout [1, 2] makes, and nothing else."""
    w = world(tokenizer, "deterministic").eval()
    frames, timestamps, _ = clip(time=4)
    batch = {"frames": frames, "timestamps": timestamps}
    both = WorldModelTask(w, 2, [2, 1], 1, seed=0)
    second = WorldModelTask(w, 2, [2], 1, seed=0)
    assert both.horizons == [1, 2]
    out = w.rollout(frames, timestamps, context=2, horizon=2, num_samples=1)
    expected = rollout_losses(out["features"][:, :, 1:], out["targets"][:, 1:], out["context"])
    for name, (value, count) in second.val_figures(w, batch).items():
        torch.testing.assert_close(value, expected[name])
        assert count == 2
    averaged = rollout_losses(out["features"], out["targets"], out["context"])
    torch.testing.assert_close(both.val_figures(w, batch)["copy_last_loss"][0], averaged["copy_last_loss"])


def test_validation_reports_how_much_of_the_gain_depends_on_the_actions():
    """Another clip's actions change nothing at the action encoder's zero init and change the loss once the actions
    count; action_usage is the share of the gain over copy-last they account for; a model without actions has none."""
    from tokenizer.model import Tokenizer

    torch.manual_seed(0)
    tokenizer = Tokenizer.build(micro_tokenizer_config()).eval()
    with torch.no_grad():  # a decoder that reads its token: at the 1e-5 init the losses differ below float precision
        for name, parameter in tokenizer.named_parameters():
            if name.endswith("lambda1"):
                parameter.fill_(1.0)
    w = world(tokenizer, "deterministic", actions=ActionSpace(dim=2)).eval()
    frames, timestamps, actions = clip(time=4)
    task = WorldModelTask(w, 2, [1, 2], 1, seed=0)
    batch = {"frames": frames, "timestamps": timestamps, "actions": actions}

    def shuffled_and_own():  # per clip
        figures = task.val_figures(w, batch)
        return figures["shuffled_actions_mean_loss"][0], figures["world_mean_loss"][0]

    assert torch.equal(*shuffled_and_own())
    with torch.no_grad():
        w.objective.action_encoder.embed.weight.normal_()
    assert not torch.equal(*shuffled_and_own())
    metrics = {"world_best_loss": 0.1, "world_mean_loss": 0.1, "copy_last_loss": 0.3}
    metrics["shuffled_actions_mean_loss"] = 0.15
    assert task.derived(metrics)["action_usage"] == pytest.approx(0.25)
    assert "action usage 0.25" in task.summary({**metrics, **task.derived(metrics)})
    plain = WorldModelTask(world(tokenizer, "deterministic").eval(), 2, [1], 1, seed=0)
    unconditioned = plain.val_figures(plain.world, {"frames": frames, "timestamps": timestamps})
    assert "shuffled_actions_mean_loss" not in unconditioned
    assert plain.derived({"world_mean_loss": 0.1, "copy_last_loss": 0.3}) == {}
