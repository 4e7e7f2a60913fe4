"""The tokenizer's transformer block: a DINOv3 ViT layer with three changes.

Pre-norm attention and MLP with LayerScale, as DINOv3, plus
- qk-norm: LayerNorm without bias on each head's queries and keys, after RoPE;
- gated attention: a per-head sigmoid gate on the attention output, computed
  by a linear layer from the block's normed input;
- SwiGLU MLP (SiLU gate) instead of the GELU MLP.
Parameter names follow the released DeltaTok checkpoints (`attention.q_proj`,
`attention.attn_gate`, `mlp.gate_proj`, `layer_scale1.lambda1`, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.attention import attention
from tokenizer.rope import apply_rope


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
        self.q_proj = nn.Linear(dim, dim)
        # DINOv3 has no key bias: softmax is invariant to it.
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=eps, bias=False) if qk_norm else None
        self.k_norm = nn.LayerNorm(self.head_dim, eps=eps, bias=False) if qk_norm else None
        self.attn_gate = nn.Linear(dim, num_heads) if gated else None
        self.attn_backend = "sdpa"

    def _fused_projection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k, v (and gate) weights stacked into one matrix: one GEMM instead of four, same parameters."""
        weights = [self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]
        biases = [self.q_proj.bias, torch.zeros_like(self.q_proj.bias), self.v_proj.bias]
        if self.attn_gate is not None:
            weights.append(self.attn_gate.weight)
            biases.append(self.attn_gate.bias)
        return torch.cat(weights), torch.cat(biases)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B, L, D); rope cos/sin (P, head_dim) rotate the last P tokens -> (B, L, D)."""
        dim = self.num_heads * self.head_dim
        projected = F.linear(x, *self._fused_projection())
        # Heads stay as strided views of (B, L, heads, head_dim): SDPA reads them in place.
        q, k, v = (
            part.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for part in projected[..., : 3 * dim].chunk(3, -1)
        )
        cos, sin = rope
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        out = attention(q, k, v, backend=self.attn_backend)  # (B, heads, L, head_dim)
        if self.attn_gate is not None:
            out = out * projected[..., 3 * dim :].sigmoid().transpose(1, 2).unsqueeze(-1)
        return self.o_proj(out.transpose(1, 2).flatten(2))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden)
        self.up_proj = nn.Linear(dim, hidden)
        self.down_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Gate and up projections in one GEMM; the checkpoint keeps them as two layers.
        weight = torch.cat((self.gate_proj.weight, self.up_proj.weight))
        bias = torch.cat((self.gate_proj.bias, self.up_proj.bias))
        gate, up = F.linear(x, weight, bias).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


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

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        # addcmul: residual and LayerScale in one pass.
        x = torch.addcmul(x, self.attention(self.norm1(x), rope), self.layer_scale1.lambda1)
        return torch.addcmul(x, self.mlp(self.norm2(x)), self.layer_scale2.lambda1)
