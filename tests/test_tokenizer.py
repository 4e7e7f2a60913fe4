"""Backbone, DeltaTok and their checkpoints: behaviour a user relies on, on tiny random models."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import default_collate

from conftest import micro_tokenizer_config, random_frames
from tokenizer.backbone import RANDOM_INIT_NAME, Backbone, BackboneConfig
from tokenizer.data.shapes import ShapesClips, ShapesConfig
from tokenizer.model import Tokenizer
from tokenizer.runtime.errors import CheckpointError, ConfigError, InputError
from tokenizer.training import FeaturePool, TokenizerTask


def test_random_backbone_is_seeded_named_and_frozen():
    cfg = micro_tokenizer_config().backbone
    a, b = Backbone.from_config(cfg), Backbone.from_config(cfg)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    other = Backbone.from_config(BackboneConfig(**{**cfg.__dict__, "seed": 1}))
    assert not torch.equal(a.model.embeddings.patch_embeddings.weight, other.model.embeddings.patch_embeddings.weight)
    assert a.name == RANDOM_INIT_NAME and not a.is_pretrained
    parent = torch.nn.Sequential(a)
    parent.train()
    assert not a.training and not a.model.training
    assert not any(p.requires_grad for p in a.parameters())


def test_backbone_rejects_bad_frames(tokenizer):
    with pytest.raises(InputError, match="not a multiple of the backbone patch size 8"):
        tokenizer.features(random_frames(1, 2, size=36))
    with pytest.raises(InputError, match="uint8"):
        tokenizer.features(random_frames(1, 2).float())
    with pytest.raises(InputError, match=r"\(B, T, 3, H, W\)"):
        tokenizer.features(random_frames(1, 2)[:, 0])


def test_hub_backbone_offline_fails_with_the_way_out():
    code = (
        "from tokenizer.backbone import Backbone\nfrom tokenizer.runtime.errors import ConfigError\ntry:\n "
        "   Backbone.from_pretrained('facebook/dinov3-vitb16-pretrain-lvd1689m')\nexcept ConfigError as err:\n "
        "   print(err)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent-deltaworld-test"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "backbone.name=DIR" in out.stdout and "hf download" in out.stdout, out.stdout + out.stderr


def test_local_backbone_folder_without_config(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        Backbone.from_pretrained(str(tmp_path))


def test_one_token_per_frame_and_first_from_black(tokenizer):
    frames = random_frames(2, 3)
    tokens, features = tokenizer.tokenize(frames)
    assert tokens.shape == (2, 3, 32) and features.shape == (2, 3, 16, 32)
    rope = tokenizer.rope((4, 4), torch.device("cpu"))
    black = tokenizer.black_features(2, 32, 32, torch.device("cpu"))
    with torch.no_grad():
        first = tokenizer.deltatok.encode(black, features[:, 0], rope)[:, 0]
        second = tokenizer.deltatok.encode(features[:, 0], features[:, 1], rope)[:, 0]
    torch.testing.assert_close(tokens[:, 0], first)
    torch.testing.assert_close(tokens[:, 1], second)


def test_rollout_horizon_bounds(tokenizer):
    frames = random_frames(1, 3)
    out = tokenizer.rollout(frames, horizon=2)
    assert out["preds"].shape == (1, 2, 16, 32) and out["context"].shape == (1, 1, 16, 32)
    for bad in (0, 4):
        with pytest.raises(InputError, match="horizon"):
            tokenizer.rollout(frames, horizon=bad)


def test_non_delta_mode_ignores_the_previous_frame():
    cfg = micro_tokenizer_config()
    cfg.model.use_delta = False
    cfg.model.layer_scale_init = 1.0  # at 1e-5 the blocks barely move the stream: reading the wrong frame would pass
    torch.manual_seed(0)
    tok = Tokenizer.build(cfg).eval()
    frames = random_frames(1, 2)
    features = tok.features(frames)
    rope = tok.rope((4, 4), torch.device("cpu"))
    with torch.no_grad():
        a = tok.deltatok(features[:, 0], features[:, 1], rope)
        b = tok.deltatok(torch.randn_like(features[:, 0]), features[:, 1], rope)
        other_next = tok.deltatok(features[:, 0], torch.randn_like(features[:, 1]), rope)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert (other_next - a).abs().mean() > 1e-4  # the next frame does matter, far above that tolerance


def test_difference_input_hands_the_encoder_next_minus_prev():
    """encoder_input=difference encodes (prev, next) as the paper's encoder would encode (prev, next - prev)."""
    torch.manual_seed(0)
    paper = Tokenizer.build(micro_tokenizer_config()).eval()
    cfg = micro_tokenizer_config()
    cfg.model.encoder_input = "difference"
    ours = Tokenizer.build(cfg).eval()
    ours.deltatok.load_state_dict(paper.deltatok.state_dict())  # same keys: a paper checkpoint loads as is
    for block in (*paper.deltatok.encoder_blocks, *ours.deltatok.encoder_blocks):
        block.layer_scale1.lambda1.data.fill_(1.0)  # at the paper's 1e-5 the blocks barely change the token
        block.layer_scale2.lambda1.data.fill_(1.0)
    features = paper.features(random_frames(2, 2))
    prev, nxt = features[:, 0], features[:, 1]
    rope = paper.rope((4, 4), torch.device("cpu"))
    with torch.no_grad():
        torch.testing.assert_close(ours.deltatok.encode(prev, nxt, rope), paper.deltatok.encode(prev, nxt - prev, rope))
        assert not torch.allclose(
            ours.deltatok.encode(prev, nxt, rope), paper.deltatok.encode(prev, nxt, rope), atol=1e-3
        )


def test_difference_only_input_encodes_the_change_alone():
    """encoder_input=difference_only encodes (prev, next) as the non-delta encoder would encode next - prev alone."""
    torch.manual_seed(0)
    cfg = micro_tokenizer_config()
    cfg.model.use_delta, cfg.model.layer_scale_init = False, 1.0  # at 1e-5 the blocks barely change the token
    single = Tokenizer.build(cfg).eval()
    cfg = micro_tokenizer_config()
    cfg.model.encoder_input, cfg.model.layer_scale_init = "difference_only", 1.0
    ours = Tokenizer.build(cfg).eval()
    ours.deltatok.load_state_dict(single.deltatok.state_dict())  # same keys as every other input
    features = single.features(random_frames(2, 2))
    prev, nxt = features[:, 0], features[:, 1]
    rope = single.rope((4, 4), torch.device("cpu"))
    with torch.no_grad():
        token = ours.deltatok.encode(prev, nxt, rope)
        torch.testing.assert_close(token, single.deltatok.encode(torch.randn_like(prev), nxt - prev, rope))
        # Only the change is seen: the same change over another previous frame gives the same token...
        torch.testing.assert_close(ours.deltatok.encode(prev + 1.0, nxt + 1.0, rope), token)
        assert not torch.allclose(ours.deltatok.encode(prev, prev + 2 * (nxt - prev), rope), token, atol=1e-3)
        # ...while the decoder still starts from the previous frame, as in every delta mode.
        assert not torch.allclose(
            ours.deltatok.decode(token, prev + 1.0, rope), ours.deltatok.decode(token, prev, rope), atol=1e-3
        )


def test_encoder_top_k_reads_the_most_changed_patches_at_their_positions():
    """encoder_top_k=k encodes each pair as the full encoder would encode its k most-changed patches alone."""
    torch.manual_seed(0)

    def build(top_k):
        cfg = micro_tokenizer_config()
        cfg.model.num_layers, cfg.model.encoder_input, cfg.model.layer_scale_init = 2, "difference_only", 1.0
        cfg.model.encoder_top_k = top_k
        return Tokenizer.build(cfg).eval()

    full, picking = build(0), build(5)
    picking.deltatok.load_state_dict(full.deltatok.state_dict())
    prev = full.features(random_frames(2, 1))[:, 0]
    # Each sample changes most in other patches; the rest change a little, so they are read unless dropped.
    changed = [torch.tensor([0, 3, 7, 8, 15]), torch.tensor([1, 2, 9, 12, 14])]
    nxt = prev + 0.01 * torch.randn_like(prev)
    for sample, patches in enumerate(changed):
        nxt[sample, patches] += torch.randn(len(patches), prev.shape[-1])
    cos, sin = full.rope((4, 4), torch.device("cpu"))
    with torch.no_grad():
        token = picking.deltatok.encode(prev, nxt, (cos, sin))
        for sample, patches in enumerate(changed):
            shuffled = patches[torch.randperm(len(patches))]  # which order they are read in does not matter
            alone = full.deltatok.encode(
                prev[sample : sample + 1, shuffled], nxt[sample : sample + 1, shuffled], (cos[shuffled], sin[shuffled])
            )
            torch.testing.assert_close(token[sample : sample + 1], alone)
        assert not torch.allclose(full.deltatok.encode(prev, nxt, (cos, sin)), token, atol=1e-3)
        # Ties (two identical frames: no patch changes) go to the lowest patch indices, on every device.
        first = torch.arange(5)
        torch.testing.assert_close(
            picking.deltatok.encode(prev, prev, (cos, sin)),
            full.deltatok.encode(prev[:, first], prev[:, first], (cos[first], sin[first])),
        )
        # The decoder is untouched, and a k of at least the patch count reads every patch.
        torch.testing.assert_close(
            picking.deltatok.decode(token, prev, (cos, sin)), full.deltatok.decode(token, prev, (cos, sin))
        )
        picking.deltatok.cfg.encoder_top_k = 16
        torch.testing.assert_close(
            picking.deltatok.encode(prev, nxt, (cos, sin)), full.deltatok.encode(prev, nxt, (cos, sin))
        )


def test_encoder_can_be_deeper_than_the_decoder():
    cfg = micro_tokenizer_config()
    cfg.model.encoder_layers = 3
    tok = Tokenizer.build(cfg).eval()
    assert (len(tok.deltatok.encoder_blocks), len(tok.deltatok.decoder_blocks)) == (3, 1)
    features = tok.features(random_frames(2, 2))
    with torch.no_grad():
        assert (
            tok.deltatok(features[:, 0], features[:, 1], tok.rope((4, 4), torch.device("cpu"))).shape
            == features[:, 1].shape
        )


def test_several_encoder_queries_pool_into_one_token():
    """The token is the normed mean of the queries' outputs: which query is which does not matter, their number does."""
    torch.manual_seed(0)
    cfg = micro_tokenizer_config()
    cfg.model.num_layers, cfg.model.encoder_queries, cfg.model.layer_scale_init = 2, 3, 1.0
    tok = Tokenizer.build(cfg).eval()
    features = tok.features(random_frames(2, 2))
    prev, nxt = features[:, 0], features[:, 1]
    rope = tok.rope((4, 4), torch.device("cpu"))
    with torch.no_grad():
        token = tok.deltatok.encode(prev, nxt, rope)
        assert token.shape == (2, 1, 32)
        tok.deltatok.z_embed.weight.copy_(tok.deltatok.z_embed.weight.flip(0))
        torch.testing.assert_close(tok.deltatok.encode(prev, nxt, rope), token)
        one = micro_tokenizer_config()
        one.model.num_layers, one.model.layer_scale_init = 2, 1.0
        single = Tokenizer.build(one).eval()
        state = tok.deltatok.state_dict()
        state["z_embed.weight"] = state["z_embed.weight"][:1]
        single.deltatok.load_state_dict(state)
        assert not torch.allclose(single.deltatok.encode(prev, nxt, rope), token, atol=1e-3)


@pytest.mark.parametrize("overrides, message", [
    ({"encoder_input": "delta"}, "not one of next, difference, difference_only"),
    ({"encoder_input": "difference", "use_delta": False}, "needs model.use_delta=true"),
    ({"encoder_input": "difference_only", "use_delta": False}, "difference_only needs model.use_delta=true"),
    ({"encoder_layers": -1}, "encoder_layers must be at least 1"),
    ({"encoder_queries": 0}, "encoder_queries must be at least 1"),
    ({"encoder_input": "difference_only", "encoder_top_k": -1},
     "encoder_top_k must be 0 \\(every patch\\) or a number of patches"),
    ({"encoder_input": "difference", "encoder_top_k": 8}, "encoder_top_k=8 needs model.encoder_input=difference_only"),
])  # fmt: skip
def test_bad_encoder_options_are_one_clear_error(overrides, message):
    cfg = micro_tokenizer_config()
    for key, value in overrides.items():
        setattr(cfg.model, key, value)
    with pytest.raises(ConfigError, match=message):
        Tokenizer.build(cfg)


def test_rope_jitter_only_while_training(tokenizer):
    deltatok = tokenizer.deltatok
    assert torch.equal(deltatok.rope((4, 4))[0], deltatok.rope((4, 4))[0])
    deltatok.train()
    try:
        g = torch.Generator().manual_seed(0)
        assert not torch.equal(deltatok.rope((4, 4), generator=g)[0], deltatok.rope((4, 4), generator=g)[0])
    finally:
        deltatok.eval()


def test_save_and_load_round_trip(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "backbone.safetensors",
        "config.yaml",
        "deltatok.safetensors",
    ]
    loaded = Tokenizer.from_pretrained(tmp_path / "tok")
    frames = random_frames(2, 3, seed=1)
    torch.testing.assert_close(loaded.tokenize(frames)[0], tokenizer.tokenize(frames)[0], rtol=0, atol=0)


@pytest.mark.parametrize("wrapped", [False, True])
def test_released_pickle_layout_loads_safely(tokenizer, tmp_path, wrapped):
    state = dict(tokenizer.deltatok.state_dict())
    path = tmp_path / "pytorch_model.bin"
    torch.save({"state_dict": state} if wrapped else state, path)
    loaded = Tokenizer.from_pretrained(path, micro_tokenizer_config())
    frames = random_frames(1, 2, seed=2)
    torch.testing.assert_close(loaded.tokenize(frames)[0], tokenizer.tokenize(frames)[0], rtol=0, atol=0)


def test_checkpoint_from_another_config_names_every_mismatch(tokenizer, tmp_path):
    state = dict(tokenizer.deltatok.state_dict())
    state.pop("norm.weight")
    state["extra.weight"] = torch.zeros(3)
    state["z_embed.weight"] = torch.zeros(1, 48)
    path = tmp_path / "other.bin"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        Tokenizer.from_pretrained(path, micro_tokenizer_config())
    message = str(err.value)
    assert (
        "norm.weight" in message
        and "extra.weight" in message
        and "z_embed.weight (file (1, 48), model (1, 32))" in message
    )


def test_corrupt_truncated_and_missing_checkpoints(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    weights = tmp_path / "tok" / "deltatok.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Tokenizer.from_pretrained(tmp_path / "tok")
    bad_pickle = tmp_path / "bad.pt"
    bad_pickle.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        Tokenizer.from_pretrained(bad_pickle, micro_tokenizer_config())
    with pytest.raises(CheckpointError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "missing.bin", micro_tokenizer_config())


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"weight": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        Tokenizer.from_pretrained(path, micro_tokenizer_config())


def test_nan_weights_are_refused(tokenizer, tmp_path):
    state = {k: v.clone() for k, v in tokenizer.deltatok.state_dict().items()}
    state["norm.weight"][0] = float("nan")
    path = tmp_path / "nan.bin"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="NaN or inf"):
        Tokenizer.from_pretrained(path, micro_tokenizer_config())


def test_bare_weights_need_a_config(tokenizer, tmp_path):
    path = tmp_path / "w.bin"
    torch.save(tokenizer.deltatok.state_dict(), path)
    with pytest.raises(ConfigError, match="bare weights file"):
        Tokenizer.from_pretrained(path)


def test_atomic_writes_follow_the_umask(tmp_path):
    from tokenizer.runtime.files import atomic_write_text, save_safetensors

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "report.json", "{}")
        save_safetensors({"w": torch.zeros(2)}, tmp_path / "model.safetensors")
    finally:
        os.umask(old)
    for name in ("report.json", "model.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o640, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "report.json"]


def test_feature_pool_serves_the_clips_features_and_trains_alike(tokenizer):
    clips = ShapesClips(ShapesConfig(frame_size=32), 2, seed=0, strides=(1, 2))
    pool = FeaturePool(tokenizer, clips, size=3, batch_size=2, device=torch.device("cpu"))
    batch = default_collate([clips[i] for i in (1, 2)])
    pooled = default_collate([pool[i] for i in (4, 5)])  # ids past the pool wrap around to clips 1 and 2
    torch.testing.assert_close(pooled["features"], tokenizer.features(batch["frames"]))
    task = TokenizerTask(tokenizer, feature_grid=pool.grid)
    fresh, _ = task.loss(tokenizer.deltatok, batch, torch.Generator().manual_seed(3))
    served, _ = task.loss(tokenizer.deltatok, pooled, torch.Generator().manual_seed(3))
    torch.testing.assert_close(served, fresh)
    with pytest.raises(ConfigError, match="feature_pool"):
        FeaturePool(
            tokenizer,
            ShapesClips(ShapesConfig(frame_size=32), 2, seed=0, num_clips=2),
            size=3,
            batch_size=2,
            device=torch.device("cpu"),
        )
    # A pool larger than the run's draws keeps only the clips some step serves, which are the same clips.
    cut = FeaturePool(tokenizer, clips, size=8, batch_size=2, device=torch.device("cpu"), clips_drawn=3)
    torch.testing.assert_close(cut.features, pool.features)
