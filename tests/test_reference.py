"""The published implementation's outputs for a tiny configuration, reproduced to 1e-4 by our own code."""

from __future__ import annotations

import torch

from tokenizer.backbone import Backbone
from tokenizer.deltatok import DeltaTok, DeltaTokConfig
from tokenizer.model import Tokenizer, TokenizerConfig
from worldmodel.deltaworld import DeltaWorld
from worldmodel.objectives import ObjectiveConfig
from worldmodel.predictor import PredictorConfig
from worldmodel.world import WorldModelConfig

TOL = 1e-4


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def golden_tokenizer(golden) -> Tokenizer:
    cfg = golden["tokenizer_config"]
    backbone = Backbone.from_dinov3(golden["backbone_config"], golden["backbone_state_dict"], "golden-tiny")
    model_cfg = DeltaTokConfig(
        num_layers=cfg["num_hidden_layers"],
        mlp_hidden_size=cfg["swiglu_hidden_size"],
        use_delta=cfg["use_delta"],
        use_qk_norm=cfg["use_qk_norm"],
        use_gated_attn=cfg["use_gated_attn"],
        use_swiglu=cfg["use_swiglu"],
    )
    deltatok = DeltaTok(model_cfg, backbone.hidden_size, backbone.num_heads)
    deltatok.load_state_dict(golden["tokenizer_state_dict"], strict=True)
    return Tokenizer(backbone, deltatok, TokenizerConfig(model=model_cfg)).eval()


def golden_world(golden, tokenizer: Tokenizer, num_hypotheses: int = 8) -> DeltaWorld:
    cfg = golden["world_config"]
    config = WorldModelConfig(
        predictor=PredictorConfig(
            hidden_size=cfg["predictor_hidden_size"],
            num_layers=cfg["predictor_num_hidden_layers"],
            num_heads=cfg["predictor_num_heads"],
            mlp_ratio=cfg["mlp_ratio"],
            rope_axis_sizes=list(cfg["rope_axis_sizes"]),
            rope_unrotated_size=cfg["rope_unrotated_size"],
        ),
        objective=ObjectiveConfig(kind="bom", num_hypotheses=num_hypotheses, loss="smooth_l1", loss_beta=0.1),
        num_samples=cfg["num_samples_eval"],
    )
    world = DeltaWorld.build(tokenizer, config)
    world.objective.load_state_dict(golden["world_state_dict"], strict=True)
    return world.eval()


def test_backbone_features(golden):
    tokenizer = golden_tokenizer(golden)
    assert max_err(tokenizer.features(golden["frames"]), golden["features"]) < TOL
    black = tokenizer.black_features(2, 64, 64, torch.device("cpu"))
    assert max_err(black, golden["empty_frame_features"]) < TOL


def test_delta_tokens_and_teacher_forced_decode(golden):
    tokenizer = golden_tokenizer(golden)
    tokens, _ = tokenizer.tokenize(golden["frames"])
    assert max_err(tokens[:, :, None], golden["delta_tokens"]) < TOL
    with torch.no_grad():
        decoded = tokenizer.decode(golden["delta_tokens"][:, 1, 0], golden["features"][:, 0], (4, 4))
    assert max_err(decoded, golden["teacher_forced_decode_frame1"]) < TOL


def test_tokenizer_rollout_h3(golden):
    out = golden_tokenizer(golden).rollout(golden["frames"], horizon=3)
    ref = golden["tokenizer_rollout_h3"]
    for key in ("preds", "targets", "context"):
        assert max_err(out[key], ref[key]) < TOL, key


def test_world_rollout_ctx2(golden):
    world = golden_world(golden, golden_tokenizer(golden))
    noise = [q.reshape(-1, q.shape[-1]) for q in golden["world_queries"]]  # (B, K, 1, W) -> (B*K, W)
    out = world.rollout(golden["frames"], golden["timestamps"], context=2, horizon=3, num_samples=3, noise=noise)
    ref = golden["world_rollout_ctx2"]
    assert max_err(out["features"], ref["preds"]) < TOL
    assert max_err(out["targets"], ref["targets"]) < TOL
    assert max_err(out["context"], ref["context"]) < TOL


def test_bom_train_step(golden):
    ref = golden["bom_train_step"]
    world = golden_world(golden, golden_tokenizer(golden), num_hypotheses=ref["num_samples_train"])
    inputs = world.training_inputs(golden["frames"], golden["timestamps"], None)
    loss, preds = world.objective.loss_with_hypotheses(
        **{k: v for k, v in inputs.items()}, hypotheses=list(ref["sampled_queries"])
    )
    assert max_err(preds, ref["predictions"]) < TOL
    assert max_err(inputs["targets"][:, :, 0], ref["targets"]) < TOL
    assert abs(loss.item() - ref["loss"].item()) < TOL
