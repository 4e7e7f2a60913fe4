"""train.optimizer=muon: Muon on weight matrices, AdamW on the rest, through the engine as users run it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from runs import assert_ok, assert_user_error, losses, train_tokenizer
from tokenizer.runtime.muon import MuonAdamW, orthogonalize
from tokenizer.runtime.optim import build_optimizer
from tokenizer.runtime.run_config import TrainConfig


@pytest.mark.parametrize("shape", [(3, 16, 40), (2, 40, 16), (1, 24, 24)])
def test_orthogonalize_brings_every_singular_value_near_one(shape):
    # Ill-conditioned input: singular values spread over two decades (five steps lift those down to about 1e-2).
    generator = torch.Generator().manual_seed(0)
    u, _, v = torch.linalg.svd(torch.randn(*shape, generator=generator), full_matrices=False)
    spread = torch.logspace(0, -2, u.shape[-1])
    singular = torch.linalg.svdvals(orthogonalize(u * spread[None, None, :] @ v))
    assert singular.min() > 0.6 and singular.max() < 1.25, singular


def test_adamw_groups_update_exactly_as_torch_fused_adamw():
    torch.manual_seed(0)
    ours = nn.Parameter(torch.randn(7))
    theirs = nn.Parameter(ours.detach().clone())
    muon = MuonAdamW([{"params": [ours], "weight_decay": 0.1, "muon": False}], lr=1e-2, betas=(0.9, 0.99))
    adamw = torch.optim.AdamW([theirs], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, fused=True)
    for _ in range(5):
        ours.grad = torch.randn(7)
        theirs.grad = ours.grad.clone()
        muon.step()
        adamw.step()
    assert torch.equal(ours, theirs)


def test_muon_moves_matrices_by_an_adamw_sized_step_in_every_direction():
    torch.manual_seed(0)
    layer = nn.Linear(32, 64)
    optimizer = build_optimizer(layer, TrainConfig(optimizer="muon", lr=1e-3, weight_decay=0.0))
    assert [g["muon"] for g in optimizer.param_groups] == [True, False]
    before = layer.weight.detach().clone()
    # One direction dominates the gradient 30 to 1; Muon's step moves along all 32 at a like rate.
    layer.weight.grad = torch.randn(64, 1) @ torch.randn(1, 32) + torch.randn(64, 32) / 30
    layer.bias.grad = torch.zeros(64)
    optimizer.step()
    step = layer.weight.detach() - before
    rms = step.pow(2).mean().sqrt().item()
    assert 0.1e-3 < rms < 0.3e-3, rms  # 0.2 x lr, AdamW's typical update RMS
    assert (torch.linalg.svdvals(step) > 0.5 * torch.linalg.svdvals(step)[0]).all()


def test_a_muon_group_refuses_non_matrices():
    with pytest.raises(ValueError, match="2-D"):
        MuonAdamW([{"params": [nn.Parameter(torch.zeros(3))], "muon": True}], lr=1e-3)


def test_muon_run_trains_resumes_exactly_and_refuses_another_optimizer(tmp_path):
    common = ["train.optimizer=muon", "train.lr_schedule=constant", "train.checkpoint_every=3"]
    straight, halted = tmp_path / "straight", tmp_path / "halted"
    assert_ok(train_tokenizer(straight, "train.max_steps=6", *common))
    assert_ok(train_tokenizer(halted, "train.max_steps=3", *common))
    assert_user_error(
        train_tokenizer(
            halted, "train.max_steps=6", "resume=true", "train.optimizer=adamw", "train.lr_schedule=constant"
        ),
        "another train.optimizer",
    )
    # The momentum buffers are in the checkpoint: the resumed curve is the uninterrupted one.
    assert_ok(train_tokenizer(halted, "train.max_steps=6", "resume=true", *common))
    assert losses(halted) == pytest.approx(losses(straight), rel=1e-5, abs=1e-7)
