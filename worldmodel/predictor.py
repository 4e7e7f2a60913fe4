"""The predictor: learned queries cross-attend to a history of tokens.

Each block: q = q + LayerScale(CrossAttn(LayerNorm(q), history)), then a
LayerScale'd GELU MLP; the output head is Linear(LayerNorm(q)) back to the token
width. Keys and values are projections of the raw history tokens in every
block, so they never depend on the queries: a rollout projects each history
token once (`HistoryCache`) and only the new token per step.

Positions enter through 1-D RoPE per axis (time for DeltaWorld; time, x, y for
the patch-level DINOWorld): an axis chunk of `axis_size` channels, frequencies
1 / 10^linspace(-2, 2, axis_size / 2), angle 2*pi*position*freq, halves rotated;
the last `rope_unrotated_size` channels of each head are not rotated.
Parameter names follow the released DeltaWorld checkpoint (`blocks.N.attention.kv_proj`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from tokenizer.attention import attention
from tokenizer.blocks import GeluMLP, LayerScale
from tokenizer.rope import signed_sin
from tokenizer.runtime.errors import ConfigError


@dataclass
class PredictorConfig:
    """A predictor (worldmodel.predictor): learned queries cross-attend to a history of tokens. Each head's
    channels are the RoPE axes' chunks followed by the unrotated tail."""

    hidden_size: int = 128  # width of the queries and blocks (768 in the paper's ViT-B recipe)
    num_layers: int = 2  # cross-attention blocks
    num_heads: int = 4  # attention heads; the head size is hidden_size / num_heads
    mlp_ratio: int = 4  # GELU MLP hidden size, as a multiple of hidden_size
    # RoPE channels of each head per position axis, each even: [time] for DeltaWorld, [time, x, y] for DINOWorld.
    rope_axis_sizes: list[int] = field(default_factory=lambda: [28])
    rope_unrotated_size: int = (
        4  # channels at the end of each head left unrotated; with the axes they make the head size
    )
    layer_scale_init: float = 1e-5  # initial LayerScale of every residual branch
    initializer_range: float = 0.02  # std of the truncated-normal initialisation of linear weights

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"predictor hidden_size {self.hidden_size} does not split into {self.num_heads} heads")
        head = self.hidden_size // self.num_heads
        rope_total = sum(self.rope_axis_sizes) + self.rope_unrotated_size
        if rope_total != head or any(size % 2 for size in self.rope_axis_sizes):
            raise ConfigError(
                f"predictor RoPE sizes {list(self.rope_axis_sizes)} + {self.rope_unrotated_size} unrotated must be "
                f"even and sum to the head size {head}"
            )


def axis_rope(positions: torch.Tensor, axis_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (B, L) -> cos/sin (B, 1, L, axis_size) for one RoPE axis."""
    half = axis_size // 2
    inv_freq = 1.0 / 10.0 ** torch.linspace(-2, 2, half, device=positions.device, dtype=torch.float32)
    angles = (2 * math.pi) * positions.float()[..., None] * inv_freq
    angles = torch.cat((angles, angles), dim=-1).unsqueeze(1)
    return angles.cos(), angles.sin()


class MultiAxisRope:
    """Precomputed rotations for a (B, L, axes) position tensor; applied to (B, heads, L, head_dim).

    All axes and the unrotated tail are folded into one head-wide cos table, one signed sin
    table and one channel permutation (each axis chunk's halves swapped), so applying the
    rotation is three passes over x whatever the number of axes.
    """

    def __init__(self, positions: torch.Tensor, axis_sizes: list[int], head_dim: int):
        if positions.ndim == 2:
            positions = positions.unsqueeze(-1)
        if positions.shape[-1] != len(axis_sizes):
            raise ValueError(f"positions have {positions.shape[-1]} axes but RoPE has {len(axis_sizes)}")
        cos_parts, sin_parts, perm, offset = [], [], [], 0
        for i, size in enumerate(axis_sizes):
            cos, sin = axis_rope(positions[..., i], size)
            cos_parts.append(cos)
            sin_parts.append(signed_sin(sin))
            perm += list(range(offset + size // 2, offset + size)) + list(range(offset, offset + size // 2))
            offset += size
        tail = (*cos_parts[0].shape[:-1], head_dim - offset)
        self.cos = torch.cat(cos_parts + [cos_parts[0].new_ones(tail)], dim=-1)
        self.sin = torch.cat(sin_parts + [sin_parts[0].new_zeros(tail)], dim=-1)
        self.perm = torch.tensor(perm + list(range(offset, head_dim)), device=positions.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(x * self.cos.to(x.dtype), x.index_select(-1, self.perm), self.sin.to(x.dtype))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, history_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(history_dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.attn_backend = "sdpa"

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def project_history(self, history: torch.Tensor, rope: MultiAxisRope) -> tuple[torch.Tensor, torch.Tensor]:
        """history (B, L, D_tok) -> rotated keys and values, each (B, heads, L, head_dim)."""
        k, v = self.kv_proj(history).chunk(2, dim=-1)
        return rope(self._heads(k)), self._heads(v)

    def forward(
        self, q: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], rope: MultiAxisRope, mask
    ) -> torch.Tensor:
        """q (B, Q, W) against projected history -> (B, Q, W)."""
        query = rope(self._heads(self.q_proj(q)))
        out = attention(query, kv[0], kv[1], mask, backend=self.attn_backend)
        return self.out_proj(out.transpose(1, 2).flatten(2))


class PredictorBlock(nn.Module):
    def __init__(self, cfg: PredictorConfig, history_dim: int):
        super().__init__()
        dim = cfg.hidden_size
        self.norm1 = nn.LayerNorm(dim)
        self.attention = CrossAttention(dim, history_dim, cfg.num_heads)
        self.layer_scale1 = LayerScale(dim, cfg.layer_scale_init)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GeluMLP(dim, dim * cfg.mlp_ratio)
        self.layer_scale2 = LayerScale(dim, cfg.layer_scale_init)

    def forward(self, q, kv, rope, mask):
        # addcmul: residual and LayerScale in one pass.
        q = torch.addcmul(q, self.attention(self.norm1(q), kv, rope, mask), self.layer_scale1.lambda1)
        return torch.addcmul(q, self.mlp(self.norm2(q)), self.layer_scale2.lambda1)


class HistoryCache:
    """Per-block projected keys/values of a token history that grows one step at a time."""

    def __init__(self, kv: list[tuple[torch.Tensor, torch.Tensor]]):
        self.kv = kv

    def __len__(self) -> int:
        return self.kv[0][0].shape[2]

    def repeat(self, times: int) -> HistoryCache:
        """(B, ...) -> (B * times, ...), each batch element repeated `times` times in a row (samples)."""
        return HistoryCache([(k.repeat_interleave(times, 0), v.repeat_interleave(times, 0)) for k, v in self.kv])

    def append(self, other: HistoryCache) -> HistoryCache:
        return HistoryCache(
            [(torch.cat((k, k2), dim=2), torch.cat((v, v2), dim=2)) for (k, v), (k2, v2) in zip(self.kv, other.kv)]
        )


class Predictor(nn.Module):
    def __init__(self, cfg: PredictorConfig, token_dim: int, out_dim: int | None = None):
        """History entries are `token_dim` wide; outputs `out_dim` (default: the token width)."""
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.blocks = nn.ModuleList(PredictorBlock(cfg, token_dim) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.hidden_size)
        self.head = nn.Linear(cfg.hidden_size, out_dim or token_dim)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=cfg.initializer_range)
                nn.init.zeros_(module.bias)

    def rope(self, positions: torch.Tensor) -> MultiAxisRope:
        return MultiAxisRope(positions, self.cfg.rope_axis_sizes, self.cfg.hidden_size // self.cfg.num_heads)

    def encode_history(self, history: torch.Tensor, positions: torch.Tensor) -> HistoryCache:
        """history tokens (B, L, D_tok) at positions (B, L[, axes]) -> cache of projected keys/values."""
        rope = self.rope(positions)
        return HistoryCache([block.attention.project_history(history, rope) for block in self.blocks])

    def attend(
        self,
        queries: torch.Tensor,
        query_positions: torch.Tensor,
        cache: HistoryCache,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """queries (B, Q, W) at positions (B, Q[, axes]) against a cache -> predicted tokens (B, Q, D_tok).

        `mask` (Q, L) is True where a query may look at a history entry.
        """
        rope = self.rope(query_positions)
        q = queries
        for block, kv in zip(self.blocks, cache.kv):
            q = block(q, kv, rope, mask)
        return self.head(self.norm(q))

    def forward(self, queries, query_positions, history, history_positions, mask=None):
        """One-shot form of encode_history + attend."""
        return self.attend(queries, query_positions, self.encode_history(history, history_positions), mask)


def causal_mask(query_frames: torch.Tensor, key_frames: torch.Tensor) -> torch.Tensor:
    """(Q, L) boolean: a query predicting frame i may see history entries of frames before i."""
    return key_frames[None, :] < query_frames[:, None]
