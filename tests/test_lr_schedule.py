"""The learning rate each parameter gets: the schedules over steps, and train.lr_scale per module."""

from __future__ import annotations

import pytest
import torch
from conftest import micro_tokenizer_config
from safetensors.torch import load_file

from runs import assert_ok, assert_user_error, train_tokenizer
from tokenizer.deltatok import DeltaTok
from tokenizer.runtime.engine import TrainConfig, build_optimizer, lr_at
from tokenizer.runtime.errors import ConfigError


def test_wsd_holds_the_peak_then_decays_linearly_to_zero_over_the_last_fraction():
    cfg = TrainConfig(lr=1.0, max_steps=110, warmup_steps=10, lr_schedule="wsd", lr_decay_fraction=0.2)
    assert lr_at(5, cfg) == pytest.approx(0.5)  # warmup still applies
    assert [lr_at(step, cfg) for step in (10, 50, 90)] == [1.0, 1.0, 1.0]
    # The last 20 of the 100 post-warmup steps: 20/20 at step 90, then down by 1/20 a step.
    assert [lr_at(step, cfg) for step in (95, 100, 109, 110)] == pytest.approx([0.75, 0.5, 0.05, 0.0])


def micro_deltatok() -> DeltaTok:
    cfg = micro_tokenizer_config()
    return DeltaTok(cfg.model, dim=cfg.backbone.hidden_size, num_heads=cfg.backbone.num_heads)


def test_lr_scale_gives_each_module_its_multiplier_and_keeps_the_decay_split():
    model = micro_deltatok()
    optimizer = build_optimizer(model, TrainConfig(lr_scale={"encoder_blocks": 3.0, "encoder_blocks.0.mlp": 5.0, "z_embed": 3.0}))
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    for name, p in model.named_parameters():
        expected = 5.0 if name.startswith("encoder_blocks.0.mlp.") else 3.0 if name.split(".")[0] in ("encoder_blocks", "z_embed") else 1.0
        assert group_of[id(p)]["lr_scale"] == expected, name
        decayed = name.endswith("weight") and "norm" not in name and "embed" not in name
        assert (group_of[id(p)]["weight_decay"] > 0) == decayed, name
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_without_lr_scale_the_groups_are_the_decay_split_alone():
    optimizer = build_optimizer(micro_deltatok(), TrainConfig())
    assert [g["lr_scale"] for g in optimizer.param_groups] == [1.0, 1.0]


@pytest.mark.parametrize(
    "lr_scale, fragments",
    [
        ({"encoder": 2.0}, ["train.lr_scale", "encoder", "encoder_blocks"]),
        ({"encoder_blocks": 0.0}, ["train.lr_scale.encoder_blocks", "positive"]),
        ({"encoder_blocks": float("nan")}, ["train.lr_scale.encoder_blocks", "positive"]),
    ],
)
def test_a_bad_lr_scale_is_refused_by_name(lr_scale, fragments):
    with pytest.raises(ConfigError) as err:
        build_optimizer(micro_deltatok(), TrainConfig(lr_scale=lr_scale))
    assert all(fragment in str(err.value) for fragment in fragments), err.value


def test_a_training_run_moves_each_module_at_its_scaled_rate(tmp_path):
    out = tmp_path / "scaled"
    steps = ["train.max_steps=2", "train.checkpoint_every=1", "train.warmup_steps=0", "train.grad_clip=0"]
    assert_ok(train_tokenizer(out, *steps, "train.lr_scale.decoder_blocks=1e-9"))
    first, second = (load_file(str(out / f"checkpoints/step_00000{s}/model.safetensors")) for s in (1, 2))
    moved = {name: (second[name] - first[name]).abs().max().item() for name in first}
    # AdamW moves each weight by about train.lr a step; the decoder's by about 1e-12 times that.
    assert max(v for k, v in moved.items() if k.startswith("decoder_blocks.")) < 1e-8
    assert min(v for k, v in moved.items() if k.startswith("encoder_blocks.") and k.endswith("weight")) > 1e-5


def test_a_misspelt_lr_scale_prefix_stops_the_run_with_one_line(tmp_path):
    out = tmp_path / "typo"
    assert_user_error(train_tokenizer(out, "train.max_steps=1", "train.lr_scale.encoder_block=2"), "encoder_block", "no trainable parameter")
    assert not (out / "checkpoints").exists()
