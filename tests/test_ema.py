"""train.ema_decay: the moving average's arithmetic, its checkpoint file, and a run that saves and resumes it."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from runs import assert_ok, losses, train_tokenizer
from tokenizer.model import WEIGHTS_FILE
from tokenizer.runtime.ema import EMA, EMA_FILE
from tokenizer.runtime.errors import CheckpointError


def test_the_average_follows_the_warmed_up_decay():
    layer = nn.Linear(2, 1, bias=False)
    frozen = nn.Parameter(torch.ones(1), requires_grad=False)
    layer.register_parameter("frozen", frozen)
    with torch.no_grad():
        layer.weight.fill_(0.0)
    ema = EMA(layer, decay=0.3)
    assert list(ema.average) == ["weight"]  # frozen parameters are not averaged
    expected = torch.zeros(1, 2)
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]):
        with torch.no_grad():
            layer.weight.fill_(value)
        decay = min(0.3, (1 + n) / (10 + n))  # the warm-up for n < 3, then the cap
        ema.update()
        expected = decay * expected + (1 - decay) * value
        assert torch.allclose(ema.average["weight"], expected)
    assert ema.current_decay() == 0.3


def test_swapped_in_restores_the_trained_weights_and_copy_keeps_the_average():
    layer = nn.Linear(3, 3)
    ema = EMA(layer, decay=0.5)
    for value in (1.0, -2.0):
        with torch.no_grad():
            layer.weight.fill_(value)
        ema.update()
    trained = {k: v.clone() for k, v in layer.state_dict().items()}
    average = {k: v.clone() for k, v in ema.average.items()}
    with ema.swapped_in():
        assert torch.equal(layer.weight, average["weight"]) and not torch.equal(layer.weight, trained["weight"])
    assert all(torch.equal(layer.state_dict()[k], trained[k]) for k in trained)
    assert all(torch.equal(ema.average[k], average[k]) for k in average)
    ema.copy_to_module()
    assert torch.equal(layer.weight, ema.average["weight"])


def test_save_and_load_round_trip_and_a_foreign_file_is_refused(tmp_path):
    layer = nn.Linear(4, 2)
    ema = EMA(layer, decay=0.99)
    with torch.no_grad():
        layer.weight.add_(1.0)
    ema.update()
    ema.update()
    ema.save(tmp_path)
    fresh = EMA(nn.Linear(4, 2), decay=0.99)
    assert fresh.load(tmp_path, [EMA_FILE])
    assert fresh.updates == 2 and all(torch.equal(fresh.average[k], ema.average[k]) for k in ema.average)
    assert not EMA(layer, decay=0.99).load(tmp_path, [])  # a file the checkpoint does not list is not read
    other = tmp_path / "other"
    other.mkdir()
    save_file({"weight": torch.zeros(3, 4), "bias": torch.zeros(3), "_updates": torch.tensor(1)}, str(other / EMA_FILE))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        fresh.load(other, [EMA_FILE])
    save_file(
        {"weight": torch.full((2, 4), float("nan")), "bias": torch.zeros(2), "_updates": torch.tensor(1)},
        str(other / EMA_FILE),
    )
    with pytest.raises(CheckpointError, match="NaN or inf"):
        fresh.load(other, [EMA_FILE])


def test_a_run_saves_the_average_and_resumes_it_exactly(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # Validation every 2 steps swaps the average in and out: the loss curve shows whether the trained weights came
    # back. Two micro-steps per optimizer step: the average must move once per optimizer step, not per micro-step.
    common = (
        "train.checkpoint_every=3",
        "train.ema_decay=0.5",
        "train.lr=1e-2",
        "train.val_every=2",
        "train.effective_batch_size=8",
    )
    assert_ok(train_tokenizer(straight, "train.max_steps=6", *common))
    checkpoint = straight / "checkpoints/step_000006"
    raw, average = load_file(str(checkpoint / "model.safetensors")), load_file(str(checkpoint / EMA_FILE))
    assert int(average.pop("_updates")) == 6  # 6 optimizer steps of 2 micro-steps each
    final = load_file(str(straight / "final" / WEIGHTS_FILE))
    # The final weights are the average, not the last step's. Files use the released names, the average the
    # module's: fused projections (attention.qkv) are named differently and left out of the comparison.
    shared = [k for k in average if k in raw]
    assert len(shared) > len(average) // 2 and final.keys() == raw.keys()
    assert any(not torch.equal(raw[k], average[k]) for k in shared)
    assert all(torch.equal(final[k], average[k]) for k in shared)

    assert_ok(train_tokenizer(resumed, "train.max_steps=3", *common))
    result = train_tokenizer(resumed, "train.max_steps=6", "resume=true", *common)
    assert_ok(result)
    assert losses(resumed) == pytest.approx(losses(straight), rel=1e-5, abs=1e-7)
    again = load_file(str(resumed / "checkpoints/step_000006" / EMA_FILE))
    assert int(again.pop("_updates")) == 6 and again.keys() == average.keys()
    assert all(torch.allclose(again[k], average[k], rtol=1e-5, atol=1e-7) for k in average)


def test_resuming_a_run_begun_without_an_average_starts_it_from_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert_ok(train_tokenizer(out, "train.max_steps=3", "train.checkpoint_every=3"))
    result = train_tokenizer(out, "train.max_steps=4", "train.checkpoint_every=3", "train.ema_decay=0.9", "resume=true")
    assert_ok(result)
    assert "holds no weight average: the average starts from its weights" in result.stdout
    assert int(load_file(str(out / "checkpoints/step_000004" / EMA_FILE))["_updates"]) == 1  # begun at the resume


def test_a_damaged_average_makes_its_checkpoint_skipped(tmp_path):
    out = tmp_path / "run"
    assert_ok(train_tokenizer(out, "train.max_steps=4", "train.checkpoint_every=2", "train.ema_decay=0.9"))
    (out / "checkpoints/step_000004" / EMA_FILE).write_bytes(b"\0" * 16)
    result = train_tokenizer(out, "train.max_steps=4", "train.checkpoint_every=2", "train.ema_decay=0.9", "resume=true")
    assert_ok(result)
    assert "skipping incomplete or damaged checkpoint" in result.stderr and "step_000004" in result.stderr
    assert "resuming from" in result.stdout and "step_000002 at step 2" in result.stdout
