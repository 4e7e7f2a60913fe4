"""Loading by Hub id, offline, through huggingface_hub's own cache: the released models (tiny stand-ins built
from the published implementation's reference vectors, in the released file layout) and our pushed folders."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import micro_predictor_config, micro_tokenizer_config
from footage import write_video
from hub_cache import DEPTH_ID, RGB_ID, SEG_ID, TOKENIZER_ID, VSPW_ID, WORLD_ID, add_folder, add_repo, torch_bytes
from tokenizer.backbone import PAPER_BACKBONE
from tokenizer.model import Tokenizer
from tokenizer.released import PAPER_TOKENIZER, PAPER_WORLD_MODEL, RELEASED, released_model
from tokenizer.runtime.cli import run_cli
from tokenizer.runtime.errors import CheckpointError, InputError
from tokenizer.runtime.hub import is_repo_id, resolve, split_revision
from worldmodel.heads import SegmentationHead, TaskHeads, load_heads
from worldmodel.objectives import ObjectiveConfig
from worldmodel.world import WorldModel, WorldModelConfig, build_world_model, load_world_model

TOL = 1e-4
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import rollout  # noqa: E402


def test_ids_and_paths_are_told_apart(tmp_path, monkeypatch):
    assert is_repo_id(TOKENIZER_ID) and is_repo_id("me/my-model@v2")
    assert split_revision("me/my-model@v2") == ("me/my-model", "v2")
    for path in ("runs/tokenizer_tiny/final", "./me/model", "/abs/path", "me/pytorch_model.bin", "one", "a/b/c"):
        assert not is_repo_id(path), path
    existing = tmp_path / "org"
    (existing / "name").mkdir(parents=True)
    assert not is_repo_id(str(existing / "name"))
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve("runs/nothing/here", "tokenizer")
    # Not repo ids either: names the Hub refuses, and a missing folder inside an existing one.
    for name in ("me/exp--2", "me/ends-", "données/x", "me/a..b"):
        assert not is_repo_id(name), name
    monkeypatch.chdir(tmp_path)
    assert is_repo_id("org/missing") is False and is_repo_id("elsewhere/missing")


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


def test_released_heads_by_id_match_the_published_outputs(heads_golden, tiny_released, tmp_path, monkeypatch):
    tokenizer = Tokenizer.from_pretrained(TOKENIZER_ID)
    rgb = heads_golden["rgb_head"]
    # The reference RGB head was made with its own norm affine; the tokenizer's backbone supplies ours.
    tokenizer.backbone.model.norm.weight.data.copy_(rgb["norm_weight"])
    tokenizer.backbone.model.norm.bias.data.copy_(rgb["norm_bias"])
    # The reference segmentation head is a 7-class revision of a released id.
    monkeypatch.setitem(
        RELEASED,
        SEG_ID,
        dataclasses.replace(RELEASED[SEG_ID], config={"num_classes": heads_golden["seg_head"]["num_classes"]}),
    )
    heads = load_heads([f"{SEG_ID}@golden", DEPTH_ID, RGB_ID], tokenizer)
    for head, entry in (
        (heads.segmentation, heads_golden["seg_head"]),
        (heads.depth, heads_golden["depth_head"]),
        (heads.rgb, rgb),
    ):
        maps = entry["input"]
        with torch.no_grad():
            out = head(maps.flatten(2).transpose(1, 2), tuple(maps.shape[-2:]))
        assert (out - entry["output"]).abs().max() < TOL
    # Our heads folder and a released id side by side; two of one kind, or a head where a tokenizer is wanted, are
    # refused.
    TaskHeads(SegmentationHead(tokenizer.dim, 5)).save(tmp_path / "ours")
    mixed = load_heads([tmp_path / "ours", DEPTH_ID], tokenizer)
    assert mixed.segmentation.num_classes == 5 and mixed.depth is not None and mixed.rgb is None
    with pytest.raises(InputError, match="two segmentation heads"):
        load_heads([tmp_path / "ours", VSPW_ID], tokenizer)
    with pytest.raises(CheckpointError, match="not a tokenizer"):
        Tokenizer.from_pretrained(SEG_ID)
    with pytest.raises(CheckpointError, match="not a task head"):
        load_heads([WORLD_ID], tokenizer)


def test_rollout_cli_on_released_ids_and_the_offline_error(tiny_released, tmp_path, capsys):
    """rollout.py names every model by id: the world model (its tokenizer comes along) and three heads."""
    for name in ("a", "b"):
        write_video(tmp_path / "videos" / f"{name}.mp4", num_frames=30)
    out = tmp_path / "out"
    rollout.main(
        [
            "--world-models",
            WORLD_ID,
            "--heads",
            SEG_ID,
            DEPTH_ID,
            RGB_ID,
            "--dataset",
            "videos",
            "--data-root",
            str(tmp_path / "videos"),
            "--frame-size",
            "64",
            "--horizon",
            "1",
            "2",
            "--samples",
            "2",
            "--val-clips",
            "2",
            "--pictures",
            "1",
            "--out",
            str(out),
        ]
    )
    report = json.loads((out / "report.json").read_text())
    assert report["models"] == {"bom": WORLD_ID} and report["heads"] == [SEG_ID, DEPTH_ID, RGB_ID]
    assert report["horizons"]["2"]["world_best"]["feature_loss"] > 0
    assert (out / "clip0.png").is_file() and (out / "clip0.gif").is_file()
    # An id the cache lacks, offline: one line on stderr naming both ways out, exit 2, nothing written.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: rollout.main(["--world-models", "Amazon-FAR/not-downloaded", "--out", str(tmp_path / "none")]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "hf download Amazon-FAR/not-downloaded" in err and "--local-dir DIR" in err
    assert not (tmp_path / "none").exists()


def test_revisions_and_a_local_dir_copy(golden, tiny_released, tmp_path):
    # A second revision of the release holding other weights: `@REV` and revision= both pick it.
    changed = {
        key: value + 1.0 if value.is_floating_point() else value
        for key, value in golden["tokenizer_state_dict"].items()
    }
    add_repo(tiny_released, TOKENIZER_ID, {"pytorch_model.bin": torch_bytes(changed)}, revision="v2")
    main = Tokenizer.from_pretrained(TOKENIZER_ID).deltatok.state_dict()
    for tagged in (
        Tokenizer.from_pretrained(f"{TOKENIZER_ID}@v2"),
        Tokenizer.from_pretrained(TOKENIZER_ID, revision="v2"),
    ):
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


def test_local_copies_named_as_the_repos_load_offline_without_the_ids(golden, tiny_released, tmp_path):
    """`hf download ID --local-dir DIR` for each, then only folders: the world model finds its tokenizer beside it,
    and a head copy is named by its kind or by its repo name."""
    models = tmp_path / "models"
    for repo_id in (WORLD_ID, TOKENIZER_ID, RGB_ID):
        shutil.copytree(resolve(repo_id, "test"), models / repo_id.split("/")[1])
    for repo_id in (WORLD_ID, TOKENIZER_ID, RGB_ID):
        shutil.rmtree(tiny_released / f"models--{repo_id.replace('/', '--')}")
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache"):
        Tokenizer.from_pretrained(TOKENIZER_ID)
    world = load_world_model(models / "deltaworld-kinetics")
    noise = [q.reshape(-1, q.shape[-1]) for q in golden["world_queries"]]
    out = world.rollout(golden["frames"], golden["timestamps"], context=2, horizon=3, num_samples=3, noise=noise)
    assert (out["features"] - golden["world_rollout_ctx2"]["preds"]).abs().max() < TOL
    assert load_heads(models / "rgb-head-imagenet", world.tokenizer).rgb is not None
    # Under another name a copy is a file of unknown origin: its kind says what it is, its shapes how large.
    renamed = tmp_path / "my-seg"
    shutil.copytree(resolve(SEG_ID, "test"), renamed)
    for source in (f"segmentation:{renamed}", f"segmentation:{renamed / 'pytorch_model.bin'}"):
        assert load_heads(source, world.tokenizer).segmentation.num_classes == 19
    with pytest.raises(InputError, match="not a head kind"):
        load_heads(f"segmentaton:{renamed}", world.tokenizer)


def test_an_id_missing_from_the_cache_offline_names_both_ways_out(offline_cache):
    with pytest.raises(CheckpointError) as info:
        Tokenizer.from_pretrained(TOKENIZER_ID)
    message = str(info.value)
    assert (
        "hf download Amazon-FAR/deltatok-kinetics" in message and "--local-dir DIR" in message and "\n" not in message
    )
    with pytest.raises(CheckpointError, match="not a world model"):
        load_world_model(TOKENIZER_ID)


def test_our_folders_push_and_load_back_by_id(offline_cache, monkeypatch, tmp_path):
    """push_to_hub uploads the save_pretrained folder; that folder, laid in the cache, loads back by id with its
    config."""
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
    config = WorldModelConfig(
        predictor=micro_predictor_config(), objective=ObjectiveConfig(kind="flow", sampling_steps=2), num_samples=3
    )
    world = build_world_model(tokenizer, config).eval()
    tokenizer.push_to_hub("me/micro-tokenizer")
    world.push_to_hub("me/micro-world")
    torch.manual_seed(1)
    TaskHeads(SegmentationHead(tokenizer.dim, 5)).push_to_hub("me/micro-heads")
    for repo_id, folder in uploads.items():
        add_folder(offline_cache, repo_id, folder)

    loaded = Tokenizer.from_pretrained("me/micro-tokenizer")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), tokenizer.state_dict().values()))
    heads = load_heads("me/micro-heads", loaded)
    assert heads.segmentation.num_classes == 5 and heads.depth is None
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
    assert RELEASED[TOKENIZER_ID].kind == "tokenizer" and RELEASED[WORLD_ID].kind == "world_model"
