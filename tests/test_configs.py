"""Every shipped YAML config loads against its script's schema, so a typo in one is caught here, not on a cluster."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from benchmarks.plan_config import PlanBenchConfig, TrainSection
from benchmarks.plan_prepare import run_config
from benchmarks.swm_protocol import SwmProtocolConfig
from rollout import RolloutRunConfig
from tokenizer.model import TokenizerSource
from tokenizer.run_config import TokenizerRunConfig
from tokenizer.runtime.cli import Flag, parse_run_config
from tokenizer.runtime.config import load_config, to_object
from tokenizer.runtime.errors import ConfigError
from train_heads import HeadsRunConfig
from worldmodel.run_config import EvalConfig, WorldModelRunConfig

SCHEMAS = {
    "tokenizer": TokenizerRunConfig,
    "world_model": WorldModelRunConfig,
    "heads": HeadsRunConfig,
    "rollout": RolloutRunConfig,
    "plan_bench": PlanBenchConfig,
    "swm_protocol": SwmProtocolConfig,
}
# The bench configs' training sections: each names a config of its own, which loads with the section's overrides.
SECTIONS = {"tokenizer_train": TokenizerRunConfig, "deltaworld": WorldModelRunConfig, "dinoworld": WorldModelRunConfig}
REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))


def test_every_config_folder_has_a_schema():
    assert {p.parent.name for p in CONFIGS} == set(SCHEMAS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_loads(path: Path):
    run = load_config(SCHEMAS[path.parent.name], path, [])
    if "train" in run:
        assert run.output_dir and run.train.max_steps > 0
    for key, schema in SECTIONS.items():
        if key in run:
            load_config(schema, REPO / run[key].config, list(run[key].overrides))


@pytest.mark.parametrize("schema", [TokenizerRunConfig, WorldModelRunConfig, HeadsRunConfig, RolloutRunConfig])
@pytest.mark.parametrize(
    "other, key",
    [
        ("data.split=val", "data.val_split"),
        ("data.num_clips=2", "data.val_clips"),
        ("data.shapes_stride=[2]", "data.shapes_strides"),
    ],
)
def test_data_keys_have_one_name_in_every_command(schema, other, key):
    """Every command reads the one DataConfig; another name for one of its keys is refused with a pointer to the key."""
    with pytest.raises(ConfigError, match=f"did you mean '{key}'"):
        load_config(schema, None, [other])


@pytest.mark.parametrize("schema", [WorldModelRunConfig, HeadsRunConfig, RolloutRunConfig, PlanBenchConfig])
def test_the_tokenizer_is_one_section_in_every_command(schema, tmp_path):
    """`tokenizer` is the same section wherever a command loads one; a path given to the section is refused with
    the key that takes it, from the command line and from a file."""
    run = load_config(schema, None, ["tokenizer.checkpoint=runs/t/final", "tokenizer.backbone.name=/models/dinov3"])
    source = to_object(run.tokenizer)
    assert isinstance(source, TokenizerSource) and source.checkpoint == "runs/t/final"
    assert source.backbone_override == "/models/dinov3"
    with pytest.raises(ConfigError, match="'tokenizer' is a section .* did you mean 'tokenizer.checkpoint'"):
        load_config(schema, None, ["tokenizer=runs/t/final"])
    # The plan bench hands its whole section to the world-model runs it starts, under their own overrides.
    section = TrainSection(config="configs/world_model/tiny_actions.yaml", overrides=["seed=7"])
    forwarded = run_config(WorldModelRunConfig, section, {"tokenizer": asdict(source), "seed": 3})
    assert to_object(forwarded.tokenizer) == source and forwarded.seed == 7
    config = tmp_path / "old.yaml"
    config.write_text("tokenizer: runs/t/final\n")
    with pytest.raises(ConfigError, match="did you mean 'tokenizer.checkpoint'"):
        load_config(schema, config)


def test_scored_horizons_have_one_name_in_training_and_rollout():
    assert load_config(WorldModelRunConfig, None, ["eval.horizons=[1,3]"]).eval.horizons == [1, 3]
    assert load_config(RolloutRunConfig, None, ["eval.horizons=[1,3]"]).eval.horizons == [1, 3]
    with pytest.raises(ConfigError, match="did you mean 'eval.horizons'"):
        load_config(WorldModelRunConfig, None, ["eval.horizon=2"])
    for bad in ([], [0, 1]):
        with pytest.raises(ConfigError, match="eval.horizons must be a non-empty list"):
            EvalConfig(horizons=bad).validate()


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


@dataclass
class _Section:
    sizes: list[int] = field(default_factory=lambda: [1])
    name: str = "a"


@dataclass
class _Run:
    out: str = "o"
    quick: bool = False
    section: _Section = field(default_factory=_Section)


_FLAGS = {
    "--out": Flag("out", "folder"),
    "--quick": Flag("quick", "fast", bool),
    "--sizes": Flag("section.sizes", "sizes", int, nargs="+"),
}


def test_every_command_parses_config_overrides_then_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("out: from_file\nsection:\n  name: file\n  sizes: [7]\n")
    # An override after a list flag is not swallowed by it; flags win over overrides, overrides over the file.
    run = parse_run_config(
        _Run, "", "", ["--config", str(config), "--sizes", "2", "3", "section.name=cli", "out=x", "--out", "y"], _FLAGS
    )
    assert (run.out, run.quick, run.section.sizes, run.section.name) == ("y", False, [2, 3], "cli")
    assert parse_run_config(_Run, "", "", ["--quick"], _FLAGS, default_config=None).quick is True
    assert parse_run_config(_Run, "", "", [], _FLAGS, default_config=str(config)).section.name == "file"
    with pytest.raises(ConfigError, match="did you mean 'section.name'"):
        parse_run_config(_Run, "", "", ["section.nam=b"], _FLAGS, default_config=None)
    with pytest.raises(ConfigError, match="not of the form"):
        parse_run_config(_Run, "", "", ["stray"], _FLAGS, default_config=None)
    with pytest.raises(SystemExit):  # --config is required unless a default is given
        parse_run_config(_Run, "", "", [], _FLAGS)
