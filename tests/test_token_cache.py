"""worldmodel.token_cache: tokenize once, train the world model on the cache."""

from __future__ import annotations

import json
import os
import subprocess
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, micro_tokenizer_config
from runs import ACCELERATE, MICRO_WORLD, PYTHON, WORLD_CONFIG, assert_ok, assert_user_error, losses, train_world
from tokenizer.data.registry import DataConfig, build_dataset
from tokenizer.data.shapes import ShapesClips, ShapesConfig
from tokenizer.model import Tokenizer
from tokenizer.runtime.config import load_config
from tokenizer.runtime.errors import ConfigError, InputError
from worldmodel.deltaworld import DeltaWorld
from worldmodel.dinoworld import DINOWorld
from worldmodel.run_config import WorldModelRunConfig

NUM_CLIPS = 12


def make_cache(tokenizer: str, out, *overrides: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    args = ["-m", "worldmodel.token_cache", "--config", WORLD_CONFIG, *MICRO_WORLD, f"tokenizer.checkpoint={tokenizer}",
            f"cache.out={out}", f"cache.num_clips={NUM_CLIPS}", "cache.shard_clips=5", "cache.batch_size=3",
            *overrides]  # fmt: skip
    command = (launcher or [PYTHON]) + args
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=180, env=env)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    for seed in (0, 1):
        torch.manual_seed(seed)
        Tokenizer.build(micro_tokenizer_config()).save_pretrained(root / f"seed{seed}")
    return root


@pytest.fixture(scope="module")
def cache(tokenizers, tmp_path_factory):
    out = tmp_path_factory.mktemp("caches") / "tokens"
    assert_ok(make_cache(str(tokenizers / "seed0"), out))
    return out


def test_cache_round_trip_holds_the_tokens_of_each_clip(tokenizers, cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    assert (manifest["num_clips"], manifest["num_frames"], manifest["dim"]) == (NUM_CLIPS, 4, 32)
    assert [s["clips"] for s in manifest["shards"]] == [5, 5, 2]
    tokenizer = Tokenizer.from_pretrained(tokenizers / "seed0")
    strides = tuple(load_config(WorldModelRunConfig, REPO / WORLD_CONFIG, []).data.shapes_strides)
    clips = ShapesClips(ShapesConfig(frame_size=32), 4, seed=0, split="train", strides=strides)
    shard = load_file(cache / "shard_00001.safetensors")
    for row, clip_id in ((0, 5), (4, 9)):
        clip = clips[clip_id]
        tokens, _ = tokenizer.tokenize(clip["frames"][None])
        assert torch.allclose(shard["tokens"][row], tokens[0], atol=1e-5)
        assert torch.equal(shard["timestamps"][row], clip["timestamps"])


def test_training_on_the_cache_gives_the_losses_of_training_on_the_clips(tokenizers, cache, tmp_path):
    steps = ["train.max_steps=3"]  # 3 steps x 4 clips: clips 0..11, all in the cache
    tokenizer = str(tokenizers / "seed0")
    assert_ok(train_world(tmp_path / "frames", tokenizer, *steps))
    assert_ok(
        train_world(
            tmp_path / "cached", tokenizer, *steps, "data.source=tokens", f"data.root={cache}", "data.val_source=shapes"
        )
    )
    on_the_fly, cached = losses(tmp_path / "frames"), losses(tmp_path / "cached")
    assert sorted(cached) == [1, 2, 3]
    for step in cached:
        assert cached[step] == pytest.approx(on_the_fly[step], rel=1e-4)


def test_a_cache_from_another_tokenizer_or_too_short_is_refused(tokenizers, cache, tmp_path):
    cached = ["data.source=tokens", f"data.root={cache}", "data.val_source=shapes"]
    result = train_world(tmp_path / "other", str(tokenizers / "seed1"), *cached)
    assert_user_error(result, "was made with tokenizer", str(tokenizers / "seed0"), str(tokenizers / "seed1"))
    assert not (tmp_path / "other").exists()
    assert_user_error(
        train_world(tmp_path / "long", str(tokenizers / "seed0"), *cached, "data.num_frames=6"),
        "clips of 4 frames",
        "data.num_frames=6",
    )
    assert_user_error(train_world(tmp_path / "noval", str(tokenizers / "seed0"), *cached[:2]), "needs data.val_source")
    # Making a different cache into the same folder is refused, and the cache is left as it was.
    before = {p.name: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert_user_error(make_cache(str(tokenizers / "seed1"), cache), "another configuration", "tokenizer")
    assert {p.name: p.stat().st_mtime_ns for p in cache.iterdir()} == before


def test_the_data_entry_point_serves_a_cache_to_a_world_model_that_trains_on_tokens(tokenizers, cache):
    """data.source=tokens is built by tokenizer.data.registry.build_dataset like any source; the world model declares
    whether it reads tokens, and the tokenizer refuses a frame size it cannot cut into patches."""
    assert DeltaWorld.trains_on_tokens and not DINOWorld.trains_on_tokens
    tokenizer = Tokenizer.from_pretrained(tokenizers / "seed0")
    data = DataConfig(source="tokens", root=str(cache), num_frames=4, val_source="shapes", frame_size=32)
    reads_tokens = SimpleNamespace(trains_on_tokens=True, tokenizer=tokenizer)
    clips = build_dataset(data, "train", 0, tokenizer=tokenizer, world=reads_tokens, tokenizer_name="seed0")
    assert len(clips) == NUM_CLIPS and clips[NUM_CLIPS]["tokens"].shape == (4, 32)
    needs_frames = SimpleNamespace(trains_on_tokens=False, config=SimpleNamespace(kind="dinoworld"))
    with pytest.raises(ConfigError, match="model.kind=dinoworld needs frames"):
        build_dataset(data, "train", 0, world=needs_frames)
    with pytest.raises(ConfigError, match="this command needs frames"):
        build_dataset(data, "train", 0)
    with pytest.raises(InputError, match="not a multiple of the backbone patch size 8"):
        build_dataset(DataConfig(frame_size=30), "train", 0, tokenizer=tokenizer)


def test_an_interrupted_cache_is_finished_by_running_again(tokenizers, cache, tmp_path):
    out = tmp_path / "resumed"
    assert_ok(make_cache(str(tokenizers / "seed0"), out))
    # Simulate a crash after the first shard: later shards and the manifest are missing.
    kept = (out / "shard_00000.safetensors").stat().st_mtime_ns
    for name in ("shard_00001.safetensors", "shard_00002.safetensors", "manifest.json"):
        (out / name).unlink()
    result = train_world(
        tmp_path / "early",
        str(tokenizers / "seed0"),
        "data.source=tokens",
        f"data.root={out}",
        "data.val_source=shapes",
    )
    assert_user_error(result, "incomplete", "run the same cache command again")
    assert_ok(make_cache(str(tokenizers / "seed0"), out))
    assert (out / "shard_00000.safetensors").stat().st_mtime_ns == kept
    for name in ("shard_00001.safetensors", "shard_00002.safetensors"):
        assert load_file(out / name).keys() == load_file(cache / name).keys()
        assert torch.allclose(load_file(out / name)["tokens"], load_file(cache / name)["tokens"])


def test_two_processes_write_their_shares(tokenizers, cache, tmp_path):
    out = tmp_path / "ddp"
    launcher = [
        ACCELERATE,
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
    ]
    result = make_cache(str(tokenizers / "seed0"), out, launcher=launcher)
    assert_ok(result)
    # One group of two: the main process alone reports, once.
    assert result.stdout.count(f"token cache {out}:") == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["clips"] for s in manifest["shards"]] == [5, 5, 2]
    for shard in manifest["shards"]:
        assert torch.allclose(
            load_file(out / shard["file"])["tokens"], load_file(cache / shard["file"])["tokens"], atol=1e-6
        )


READOUT = ["model.readout.enabled=true", "model.readout.grid=2", "model.readout.predictor.hidden_size=32",
           "model.readout.predictor.num_layers=1", "model.readout.predictor.num_heads=2",
           "model.readout.predictor.rope_axis_sizes=[12]"]  # fmt: skip


def test_a_readout_trains_from_the_cache_summaries_and_is_saved(tokenizers, cache, tmp_path):
    tokenizer = str(tokenizers / "seed0")
    with_summaries = tmp_path / "tokens"
    assert_ok(make_cache(tokenizer, with_summaries, *READOUT))
    shard = load_file(with_summaries / "shard_00000.safetensors")
    assert (
        shard["summaries"].shape == (5, 4, 4, 32)
        and json.loads((with_summaries / "plan.json").read_text())["summary_grid"] == 2
    )
    cached = ["data.source=tokens", "data.val_source=shapes", "train.max_steps=2"]
    assert_ok(train_world(tmp_path / "wm", tokenizer, *READOUT, *cached, f"data.root={with_summaries}"))
    assert (tmp_path / "wm" / "final" / "readout.safetensors").is_file()
    # The plain cache has no summaries for the readout to learn from.
    assert_user_error(
        train_world(tmp_path / "refused", tokenizer, *READOUT, *cached, f"data.root={cache}"), "summaries"
    )
