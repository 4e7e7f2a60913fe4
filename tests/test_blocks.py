"""The tokenizer block's fast paths: fused storage behind the released names, query-only last block, SwiGLU backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenizer.blocks import Block, _SwiGLUActivation
from tokenizer.deltatok import DeltaTok, DeltaTokConfig
from tokenizer.rope import patch_rope, rope_tables
from tokenizer.runtime.errors import CheckpointError, ConfigError
from tokenizer.runtime.files import load_module_weights

DIM, HEADS, GRID = 24, 2, (2, 3)


def block(seed: int = 0, gated: bool = True) -> Block:
    torch.manual_seed(seed)
    model = Block(DIM, HEADS, 40, qk_norm=True, gated_attn=gated, swiglu=True, layer_scale_init=1.0, eps=1e-5)
    with torch.no_grad():  # biases start at zero; give them values so a misplaced row shows
        for name, param in model.named_parameters():
            if "bias" in name:
                param.normal_()
    return model


@pytest.mark.parametrize("gated", [True, False])
def test_state_dict_has_the_released_names_and_round_trips(gated):
    source, target = block(0, gated), block(1, gated)
    state = source.state_dict()
    expected = {
        "attention.q_proj.weight",
        "attention.q_proj.bias",
        "attention.k_proj.weight",
        "attention.v_proj.weight",
        "attention.v_proj.bias",
        "attention.o_proj.weight",
        "mlp.gate_proj.weight",
        "mlp.gate_proj.bias",
        "mlp.up_proj.weight",
        "mlp.up_proj.bias",
    }
    gate = {"attention.attn_gate.weight", "attention.attn_gate.bias"}
    assert expected <= set(state) and (gate <= set(state)) == gated
    assert not any("qkv" in key or "gate_up" in key for key in state)
    assert state["attention.k_proj.weight"].shape == (DIM, DIM) and "attention.k_proj.bias" not in state
    assert state["mlp.up_proj.weight"].shape == (40, DIM)

    # Each released piece is the matching rows of the fused parameter, so separate layers reproduce the block.
    x = torch.randn(3, 7, DIM)
    q = F.linear(x, state["attention.q_proj.weight"], state["attention.q_proj.bias"])
    projected = F.linear(x, source.attention.qkv.weight, F.pad(source.attention.qkv_bias, (0, DIM)))
    gate_rows = HEADS if gated else 0
    torch.testing.assert_close(projected[..., gate_rows : gate_rows + DIM], q)

    load_module_weights(target, state, "test")
    rope = rope_tables(*patch_rope(GRID, DIM // HEADS, 100.0), x.shape[1])
    torch.testing.assert_close(target(x, rope), source(x, rope), rtol=0, atol=0)


def test_a_missing_piece_is_named():
    state = block().state_dict()
    state.pop("attention.k_proj.weight")
    with pytest.raises(CheckpointError, match=r"missing keys \['attention.k_proj.weight'\]"):
        load_module_weights(block(1), state, "test")


def test_query_only_last_block_matches_the_full_block():
    model = block()
    x = torch.randn(2, 1 + 6, DIM, requires_grad=True)
    rope = rope_tables(*patch_rope(GRID, DIM // HEADS, 100.0), x.shape[1])
    full = model(x, rope)[:, :1]
    (full_grad,) = torch.autograd.grad(full.square().sum(), x)
    short = model(x, rope, queries=1)
    (short_grad,) = torch.autograd.grad(short.square().sum(), x)
    assert short.shape == (2, 1, DIM)
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(short_grad, full_grad, rtol=1e-5, atol=1e-6)


def test_swiglu_backward_matches_autograd():
    gate_up = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_SwiGLUActivation.apply, (gate_up,))
    gate, up = gate_up.chunk(2, dim=-1)
    torch.testing.assert_close(_SwiGLUActivation.apply(gate_up), F.silu(gate) * up)


def test_encoder_needs_a_block():
    with pytest.raises(ConfigError, match="num_layers must be at least 1"):
        DeltaTok(DeltaTokConfig(num_layers=0), DIM, HEADS)
