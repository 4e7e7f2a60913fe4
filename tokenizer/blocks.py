"""The tokenizer's transformer block: a DINOv3 ViT layer with three changes.

Pre-norm attention and MLP with LayerScale, as DINOv3, plus
- qk-norm: LayerNorm without bias on each head's queries and keys, after RoPE;
- gated attention: a per-head sigmoid gate on the attention output, computed
  by a linear layer from the block's normed input;
- SwiGLU MLP (SiLU gate) instead of the GELU MLP.

Projections that read the same input are stored fused (one GEMM, no weight
concatenation per call), but the state dict keeps the names and shapes of the
released DeltaTok checkpoints (`attention.q_proj`, `attention.attn_gate`,
`mlp.gate_proj`, `layer_scale1.lambda1`, ...): `save_fused_as_released` splits
on save and joins on load.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.attention import attention
from tokenizer.rope import rotate


def save_fused_as_released(module: nn.Module, layout: dict[str, list[tuple[str, int]]]) -> None:
    """Make `module`'s state dict show each fused parameter as its released pieces.

    `layout` maps a fused parameter's name to (released name, rows) pieces in row order;
    pieces of zero rows are absent from the released layout. A state dict with only some
    pieces of a fused parameter is left alone, so a strict load names what is missing.
    """

    def split(module, state_dict, prefix, local_metadata):
        for fused, pieces in layout.items():
            rows = state_dict.pop(prefix + fused).split([size for _, size in pieces])
            state_dict.update({prefix + name: part for (name, size), part in zip(pieces, rows) if size})

    def join(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for fused, pieces in layout.items():
            names = [prefix + name for name, size in pieces if size]
            if all(name in state_dict for name in names):
                state_dict[prefix + fused] = torch.cat([state_dict.pop(name) for name in names])

    module.register_state_dict_post_hook(split)
    module.register_load_state_dict_pre_hook(join)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.lambda1


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, gated: bool, eps: float):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} does not split into {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.gate_heads = num_heads if gated else 0
        # Rows [gate, q, v, k]: queries and gate first so that `queries=` projects them for a few tokens only;
        # keys last because DINOv3 has no key bias (softmax ignores it), so the bias is zero-padded there.
        self.qkv = nn.Linear(dim, self.gate_heads + 3 * dim, bias=False)
        self.qkv_bias = nn.Parameter(torch.zeros(self.gate_heads + 2 * dim))
        self.o_proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=eps, bias=False) if qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_dim, eps=eps, bias=False) if qk_norm else None
        self.attn_backend = "sdpa"
        pieces = [("attn_gate", self.gate_heads), ("q_proj", dim), ("v_proj", dim)]
        save_fused_as_released(
            self,
            {
                "qkv.weight": [(f"{name}.weight", rows) for name, rows in pieces] + [("k_proj.weight", dim)],
                "qkv_bias": [(f"{name}.bias", rows) for name, rows in pieces],
            },
        )

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, heads * head_dim) -> a strided (B, heads, L, head_dim) view: SDPA reads it in place."""
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], queries: int | None = None
    ) -> torch.Tensor:
        """x (B, L, D); rope: cos and signed sin from `rope_tables`, (L, head_dim) or (B, 1, L, head_dim) -> (B, L, D).

        With `queries`, only the first `queries` tokens attend (to all L): -> (B, queries, D).
        """
        dim = self.num_heads * self.head_dim
        split = self.gate_heads + dim
        if queries is None:
            projected = F.linear(x, self.qkv.weight, F.pad(self.qkv_bias, (0, dim)))
            gate_q, v_k = projected[..., :split], projected[..., split:]
        else:
            gate_q = F.linear(x[:, :queries], self.qkv.weight[:split], self.qkv_bias[:split])
            v_k = F.linear(x, self.qkv.weight[split:], F.pad(self.qkv_bias[split:], (0, dim)))
        gate, q = gate_q[..., : self.gate_heads], self._heads(gate_q[..., self.gate_heads :])
        v, k = (self._heads(part) for part in v_k.chunk(2, dim=-1))
        cos, sin = rope
        q, k = rotate(q, cos[..., : q.shape[2], :], sin[..., : q.shape[2], :]), rotate(k, cos, sin)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        out = attention(q, k, v, backend=self.attn_backend)  # (B, heads, Lq, head_dim)
        if self.gate_heads:
            out = out * gate.sigmoid().transpose(1, 2).unsqueeze(-1)
        return self.o_proj(out.transpose(1, 2).flatten(2))


class _SwiGLUActivation(torch.autograd.Function):
    """silu(gate) * up over the fused projection (..., 2 * hidden) -> (..., hidden).

    Autograd would return the input gradient as two halves and concatenate them (a full copy of the
    widest activation in the block); this backward writes both halves into one tensor instead.
    """

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        activated = F.silu(gate)
        ctx.save_for_backward(gate_up, activated)
        return activated * up

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        gate_up, activated = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        grad_gate_up = torch.empty_like(gate_up)
        grad_gate, grad_up = grad_gate_up.chunk(2, dim=-1)
        # In place in the output's halves: no temporary the size of the activation.
        torch.mul(grad, up, out=grad_gate)
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        torch.mul(grad, activated, out=grad_up)
        return grad_gate_up


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden)
        self.down_proj = nn.Linear(hidden, dim)
        pieces = [("gate_proj", hidden), ("up_proj", hidden)]
        save_fused_as_released(
            self,
            {f"gate_up.{kind}": [(f"{name}.{kind}", rows) for name, rows in pieces] for kind in ("weight", "bias")},
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(_SwiGLUActivation.apply(self.gate_up(x)))


class GeluMLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.up_proj = nn.Linear(dim, hidden)
        self.down_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    """Pre-norm transformer block over (B, L, D) with 2-D RoPE on the trailing patch tokens."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden: int,
        *,
        qk_norm: bool,
        gated_attn: bool,
        swiglu: bool,
        layer_scale_init: float,
        eps: float,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attention = SelfAttention(dim, num_heads, qk_norm, gated_attn, eps)
        self.layer_scale1 = LayerScale(dim, layer_scale_init)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = SwiGLU(dim, mlp_hidden) if swiglu else GeluMLP(dim, mlp_hidden)
        self.layer_scale2 = LayerScale(dim, layer_scale_init)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], queries: int | None = None
    ) -> torch.Tensor:
        """x (B, L, D), RoPE tables (L, head_dim) -> (B, L, D); with `queries`, only the first `queries` tokens are
        updated and returned.

        A last block whose caller reads a few tokens skips the MLP and output projection of the rest.
        """
        residual = x if queries is None else x[:, :queries]
        # addcmul: residual and LayerScale in one pass.
        x = torch.addcmul(residual, self.attention(self.norm1(x), rope, queries), self.layer_scale1.lambda1)
        return torch.addcmul(x, self.mlp(self.norm2(x)), self.layer_scale2.lambda1)
