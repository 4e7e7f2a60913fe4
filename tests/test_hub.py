"""Loading by Hub id, offline, through huggingface_hub's own cache: the released models (tiny stand-ins built
from the published implementation's reference vectors, in the released file layout) and our pushed folders."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest
import torch
from conftest import micro_predictor_config, micro_tokenizer_config
from hub_cache import add_folder, add_repo, offline_cache  # noqa: F401  (fixture)
from omegaconf import OmegaConf
from safetensors.torch import save as safetensors_bytes

from tokenizer import released as released_module
from tokenizer.backbone import PAPER_BACKBONE
from tokenizer.model import Tokenizer
from tokenizer.released import PAPER_TOKENIZER, PAPER_WORLD_MODEL, RELEASED, released_model
from tokenizer.runtime.errors import CheckpointError
from tokenizer.runtime.hub import is_repo_id, resolve, split_revision
from worldmodel.loading import build_world_model, load_world_model
from worldmodel.objectives import ObjectiveConfig
from worldmodel.world import WorldModel, WorldModelConfig

TOL = 1e-4
REPO = Path(__file__).resolve().parents[1]
TOKENIZER_ID = "Amazon-FAR/deltatok-kinetics"
WORLD_ID = "Amazon-FAR/deltaworld-kinetics"


def torch_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def golden_configs(golden) -> tuple[dict, dict]:
    """The reference vectors' tiny sizes in the released table's form (tokenizer and world model sections)."""
    tok, world = golden["tokenizer_config"], golden["world_config"]
    tokenizer = {
        "backbone": {"name": PAPER_BACKBONE},
        "model": {"num_layers": tok["num_hidden_layers"], "mlp_hidden_size": tok["swiglu_hidden_size"]},
    }
    predictor = {
        "hidden_size": world["predictor_hidden_size"],
        "num_layers": world["predictor_num_hidden_layers"],
        "num_heads": world["predictor_num_heads"],
        "mlp_ratio": world["mlp_ratio"],
        "rope_axis_sizes": list(world["rope_axis_sizes"]),
        "rope_unrotated_size": world["rope_unrotated_size"],
    }
    return tokenizer, {"kind": "deltaworld", "predictor": predictor, "num_samples": world["num_samples_eval"]}


@pytest.fixture
def tiny_released(golden, offline_cache, monkeypatch) -> Path:
    """The released ids as tiny stand-ins: the table says the reference vectors' sizes, and the offline cache
    holds the gated DINOv3 (config.json + model.safetensors) and each release's lone pytorch_model.bin."""
    tokenizer_config, world_config = golden_configs(golden)
    monkeypatch.setitem(RELEASED, TOKENIZER_ID, dataclasses.replace(RELEASED[TOKENIZER_ID], config=tokenizer_config))
    monkeypatch.setitem(RELEASED, WORLD_ID, dataclasses.replace(RELEASED[WORLD_ID], config=world_config))
    backbone_config = {**golden["backbone_config"], "model_type": "dinov3_vit"}
    backbone_weights = {key: value.contiguous() for key, value in golden["backbone_state_dict"].items()}
    add_repo(
        offline_cache,
        PAPER_BACKBONE,
        {"config.json": json.dumps(backbone_config).encode(), "model.safetensors": safetensors_bytes(backbone_weights)},
    )
    add_repo(offline_cache, TOKENIZER_ID, {"pytorch_model.bin": torch_bytes(golden["tokenizer_state_dict"])})
    add_repo(offline_cache, WORLD_ID, {"pytorch_model.bin": torch_bytes(golden["world_state_dict"])})
    return offline_cache


def test_ids_and_paths_are_told_apart(tmp_path):
    assert is_repo_id(TOKENIZER_ID) and is_repo_id("me/my-model@v2")
    assert split_revision("me/my-model@v2") == ("me/my-model", "v2")
    for path in ("runs/tokenizer_tiny/final", "./me/model", "/abs/path", "me/pytorch_model.bin", "one", "a/b/c"):
        assert not is_repo_id(path), path
    existing = tmp_path / "org"
    (existing / "name").mkdir(parents=True)
    assert not is_repo_id(str(existing / "name"))
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve("runs/nothing/here", "tokenizer")


def test_released_tokenizer_and_world_model_by_id_match_the_published_outputs(golden, tiny_released):
    tokenizer = Tokenizer.from_pretrained(TOKENIZER_ID)
    assert tokenizer.backbone.name == PAPER_BACKBONE
    tokens, features = tokenizer.tokenize(golden["frames"])
    assert (features - golden["features"]).abs().max() < TOL
    assert (tokens[:, :, None] - golden["delta_tokens"]).abs().max() < TOL

    # The world model brings its released tokenizer along, by the table's id.
    for world in (load_world_model(WORLD_ID), WorldModel.from_pretrained(WORLD_ID)):
        noise = [q.reshape(-1, q.shape[-1]) for q in golden["world_queries"]]
        out = world.rollout(golden["frames"], golden["timestamps"], context=2, horizon=3, num_samples=3, noise=noise)
        assert (out["features"] - golden["world_rollout_ctx2"]["preds"]).abs().max() < TOL


def test_revisions_and_a_local_dir_copy(golden, tiny_released, tmp_path):
    # A second revision of the release holding other weights: `@REV` and revision= both pick it.
    changed = {key: value + 1.0 if value.is_floating_point() else value for key, value in golden["tokenizer_state_dict"].items()}
    add_repo(tiny_released, TOKENIZER_ID, {"pytorch_model.bin": torch_bytes(changed)}, revision="v2")
    main = Tokenizer.from_pretrained(TOKENIZER_ID).deltatok.state_dict()
    for tagged in (Tokenizer.from_pretrained(f"{TOKENIZER_ID}@v2"), Tokenizer.from_pretrained(TOKENIZER_ID, revision="v2")):
        state = tagged.deltatok.state_dict()
        assert all(torch.equal(state[k], changed[k]) for k in changed)
        assert not all(torch.equal(state[k], main[k]) for k in changed)
    with pytest.raises(CheckpointError, match="hf download Amazon-FAR/deltatok-kinetics --revision v3"):
        Tokenizer.from_pretrained(TOKENIZER_ID, revision="v3")
    # `hf download ID --local-dir DIR` under the repo's own name: the folder and the file in it are the release.
    local = tmp_path / "deltatok-kinetics"
    local.mkdir()
    (local / "pytorch_model.bin").write_bytes(torch_bytes(golden["tokenizer_state_dict"]))
    for source in (local, local / "pytorch_model.bin"):
        tokens, _ = Tokenizer.from_pretrained(source).tokenize(golden["frames"])
        assert (tokens[:, :, None] - golden["delta_tokens"]).abs().max() < TOL


def test_an_id_missing_from_the_cache_offline_names_both_ways_out(offline_cache):
    with pytest.raises(CheckpointError) as info:
        Tokenizer.from_pretrained(TOKENIZER_ID)
    message = str(info.value)
    assert "hf download Amazon-FAR/deltatok-kinetics" in message and "--local-dir DIR" in message and "\n" not in message
    with pytest.raises(CheckpointError, match="not a world model"):
        load_world_model(TOKENIZER_ID)


def test_our_folders_push_and_load_back_by_id(offline_cache, monkeypatch, tmp_path):
    """push_to_hub uploads the save_pretrained folder; that folder, laid in the cache, loads back by id with its config."""
    uploads: dict[str, Path] = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, **kwargs):
            pass

        def upload_folder(self, repo_id, folder_path, **kwargs):
            # The folder is temporary: keep a copy as the Hub would.
            copy = tmp_path / "uploaded" / repo_id
            for path in Path(folder_path).rglob("*"):
                if path.is_file():
                    target = copy / path.relative_to(folder_path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(path.read_bytes())
            uploads[repo_id] = copy
            return f"https://huggingface.co/{repo_id}/commit/0"

    monkeypatch.setattr("tokenizer.runtime.hub.HfApi", FakeApi)
    torch.manual_seed(0)
    tokenizer = Tokenizer.build(micro_tokenizer_config()).eval()
    config = WorldModelConfig(predictor=micro_predictor_config(), objective=ObjectiveConfig(kind="flow", sampling_steps=2), num_samples=3)
    world = build_world_model(tokenizer, config).eval()
    tokenizer.push_to_hub("me/micro-tokenizer")
    world.push_to_hub("me/micro-world")
    for repo_id, folder in uploads.items():
        add_folder(offline_cache, repo_id, folder)

    loaded = Tokenizer.from_pretrained("me/micro-tokenizer")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), tokenizer.state_dict().values()))
    back = WorldModel.from_pretrained("me/micro-world")
    assert back.config == world.config
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), world.state_dict().values()))


def test_released_table_matches_the_paper_recipe_configs():
    """The table's configs are the ones configs/*/vitb_dinov3_kinetics.yaml train: the two cannot drift apart."""
    tokenizer_yaml = OmegaConf.load(REPO / "configs/tokenizer/vitb_dinov3_kinetics.yaml")
    world_yaml = OmegaConf.load(REPO / "configs/world_model/vitb_dinov3_kinetics.yaml")
    assert OmegaConf.to_container(tokenizer_yaml.backbone) == PAPER_TOKENIZER["backbone"]
    assert OmegaConf.to_container(tokenizer_yaml.model) == PAPER_TOKENIZER["model"]
    assert OmegaConf.to_container(world_yaml.model) == PAPER_WORLD_MODEL
    assert OmegaConf.to_container(world_yaml.tokenizer.model) == PAPER_TOKENIZER["model"]
    assert released_model("Amazon-FAR/deltaworld-kinetics@main").tokenizer == TOKENIZER_ID
    assert released_model("runs/tokenizer_tiny/final") is None
    assert released_module.RELEASED[TOKENIZER_ID].kind == "tokenizer"
