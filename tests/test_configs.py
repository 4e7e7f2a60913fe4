"""Every shipped YAML config loads against its script's schema, so a typo in one is caught here, not on a cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenizer.runtime.config import load_config
from train_tokenizer import TokenizerRunConfig
from worldmodel.run_config import WorldModelRunConfig

SCHEMAS = {"tokenizer": TokenizerRunConfig, "world_model": WorldModelRunConfig}
REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))


@pytest.mark.parametrize("path", [p for p in CONFIGS if p.parent.name in SCHEMAS], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_loads(path: Path):
    run = load_config(SCHEMAS[path.parent.name], path, [])
    assert run.output_dir and run.train.max_steps > 0


def test_paper_recipes_match_the_published_sizes():
    tok = load_config(TokenizerRunConfig, REPO / "configs/tokenizer/vitb_dinov3_kinetics.yaml", [])
    assert tok.backbone.name == "facebook/dinov3-vitb16-pretrain-lvd1689m"
    assert (tok.model.num_layers, tok.model.mlp_hidden_size, tok.train.effective_batch_size) == (12, 2048, 1024)
    assert (tok.train.lr, tok.train.warmup_steps, tok.train.grad_clip) == (1e-3, 5000, 0.01)
    # The options that change DeltaTok's computation stay at the paper's values in its recipe.
    model = tok.model
    assert (model.encoder_input, model.layer_scale_init) == ("next", 1e-5)
    world = load_config(WorldModelRunConfig, REPO / "configs/world_model/vitb_dinov3_kinetics.yaml", [])
    predictor, objective = world.model.predictor, world.model.objective
    assert (predictor.hidden_size, predictor.num_layers, predictor.num_heads) == (768, 12, 12)
    assert (objective.kind, objective.num_hypotheses, world.model.num_samples) == ("bom", 256, 20)
    assert (world.train.lr, world.train.weight_decay, world.train.effective_batch_size) == (1e-4, 0.4, 1024)
