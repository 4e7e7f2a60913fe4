"""The learning rate each parameter gets: the schedules over steps, and train.lr_scale per module."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from conftest import micro_tokenizer_config
from runs import assert_ok, assert_user_error, train_tokenizer
from tokenizer.deltatok import DeltaTok
from tokenizer.run_config import TokenizerRunConfig
from tokenizer.runtime.config import load_config, to_object
from tokenizer.runtime.errors import ConfigError
from tokenizer.runtime.optim import build_optimizer, lr_at
from tokenizer.runtime.run_config import TrainConfig


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
    optimizer = build_optimizer(
        model, TrainConfig(lr_scale={"encoder_blocks": 3.0, "encoder_blocks.0.mlp": 5.0, "z_embed": 3.0})
    )
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    for name, p in model.named_parameters():
        expected = (
            5.0
            if name.startswith("encoder_blocks.0.mlp.")
            else 3.0
            if name.split(".")[0] in ("encoder_blocks", "z_embed")
            else 1.0
        )
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
        ({"encoder": 2.0}, ["names no trainable parameter: encoder (", "start with", "encoder_blocks"]),
        ({"encoder_blocks": 0.0}, ["train.lr_scale.encoder_blocks", "positive"]),
        ({"encoder_blocks": -1.0}, ["train.lr_scale.encoder_blocks", "positive"]),
        ({"encoder_blocks": float("nan")}, ["train.lr_scale.encoder_blocks", "positive"]),
        ({"encoder_blocks": float("inf")}, ["train.lr_scale.encoder_blocks", "positive"]),
        (
            {"encoder_blocks": {"0": 2.0}},
            ["train.lr_scale.encoder_blocks holds keys", "brackets", "train.lr_scale[encoder_blocks.0]"],
        ),
    ],
)
def test_a_bad_lr_scale_is_refused_by_name(lr_scale, fragments):
    with pytest.raises(ConfigError) as err:
        build_optimizer(micro_deltatok(), TrainConfig(lr_scale=lr_scale))
    assert all(fragment in str(err.value) for fragment in fragments), err.value


def test_a_prefix_with_dots_reaches_lr_scale_whole_through_brackets_on_the_command_line():
    bracketed = load_config(
        TokenizerRunConfig, "configs/tokenizer/tiny.yaml", ["train.lr_scale[encoder_blocks.0.mlp]=5"]
    )
    assert to_object(bracketed.train).lr_scale == {"encoder_blocks.0.mlp": 5.0}
    dotted = load_config(TokenizerRunConfig, "configs/tokenizer/tiny.yaml", ["train.lr_scale.encoder_blocks.0.mlp=5"])
    with pytest.raises(ConfigError, match="brackets"):
        to_object(dotted.train).validate()


def test_new_multipliers_keep_the_optimizer_layout_so_a_resume_can_change_them():
    model = micro_deltatok()
    layouts = [
        [
            [id(p) for p in group["params"]]
            for group in build_optimizer(model, TrainConfig(lr_scale=lr_scale)).param_groups
        ]
        for lr_scale in (
            {"encoder_blocks": 2.0, "z_embed": 0.5},
            {"encoder_blocks": 0.5, "z_embed": 2.0},
            {"encoder_blocks": 1.0, "z_embed": 1.0},
        )
    ]
    assert layouts[0] == layouts[1] == layouts[2]
    assert len(layouts[0]) > 2  # the prefixes did split the decay groups


def test_a_resume_may_change_lr_scale_values_but_not_its_prefixes(tmp_path):
    out = tmp_path / "resumed"
    assert_ok(train_tokenizer(out, "train.max_steps=2", "train.checkpoint_every=1", "train.lr_scale.encoder_blocks=2"))
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert_user_error(
        train_tokenizer(out, "train.max_steps=3", "resume=true", "train.lr_scale.decoder_blocks=2"),
        "train.lr_scale names other prefixes",
        "encoder_blocks -> decoder_blocks",
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    assert_ok(train_tokenizer(out, "train.max_steps=3", "resume=true", "train.lr_scale.encoder_blocks=3"))


def test_a_training_run_moves_each_module_at_its_scaled_rate(tmp_path):
    out = tmp_path / "scaled"
    steps = ["train.max_steps=2", "train.checkpoint_every=1", "train.warmup_steps=0", "train.grad_clip=0"]
    assert_ok(train_tokenizer(out, *steps, "train.lr_scale.decoder_blocks=1e-9"))
    first, second = (load_file(str(out / f"checkpoints/step_00000{s}/model.safetensors")) for s in (1, 2))
    moved = {name: (second[name] - first[name]).abs().max().item() for name in first}
    # AdamW moves each weight by about train.lr a step; the decoder's by about 1e-12 times that.
    assert max(v for k, v in moved.items() if k.startswith("decoder_blocks.")) < 1e-8
    assert min(v for k, v in moved.items() if k.startswith("encoder_blocks.") and k.endswith("weight")) > 1e-5


def test_a_misspelt_lr_scale_prefix_stops_the_run_before_it_replaces_anything(tmp_path):
    out = tmp_path / "typo"
    assert_user_error(
        train_tokenizer(out, "train.max_steps=1", "train.lr_scale.encoder_block=2"),
        "encoder_block",
        "no trainable parameter",
    )
    assert not (out / "checkpoints").exists()
    assert_ok(train_tokenizer(out, "train.max_steps=1"))
    kept = sorted(p.name for p in out.rglob("*"))
    for pool in ("feature_pool=0", "feature_pool=8"):  # the pooled path checks before it spends time encoding the pool
        replace = train_tokenizer(out, "train.max_steps=1", "overwrite=true", pool, "train.lr_scale.encoder_block=2")
        assert_user_error(replace, "encoder_block", "no trainable parameter")
        assert sorted(p.name for p in out.rglob("*")) == kept
