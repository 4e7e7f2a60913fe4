"""DINOv3's 2-D rotary position embedding for patch tokens.

Patch centres on a (rows, cols) grid are normalised to [-1, 1]; each of the two
axes rotates head_dim / 4 frequency pairs, 1 / theta^(k * 4 / head_dim).
Channels are laid out as [y-freqs, x-freqs] twice (the "rotate half" pairing).
Prefix tokens (class, registers, the delta token) are never rotated.
"""

from __future__ import annotations

import math

import torch


def patch_centres(grid: tuple[int, int], device: torch.device | None = None) -> torch.Tensor:
    """(rows*cols, 2) patch-centre coordinates (y, x) in [-1, 1], row-major."""
    rows, cols = grid
    y = (torch.arange(rows, device=device, dtype=torch.float32) + 0.5) / rows
    x = (torch.arange(cols, device=device, dtype=torch.float32) + 0.5) / cols
    coords = torch.stack(torch.meshgrid(y, x, indexing="ij"), dim=-1).flatten(0, 1)
    return 2.0 * coords - 1.0


def patch_rope(
    grid: tuple[int, int],
    head_dim: int,
    theta: float,
    scale: torch.Tensor | float = 1.0,
    device: torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each (rows*cols, head_dim), for coordinates multiplied by `scale`."""
    if head_dim % 4:
        raise ValueError(f"2-D RoPE needs a head size divisible by 4, got {head_dim}")
    inv_freq = 1.0 / theta ** (torch.arange(head_dim // 4, device=device, dtype=torch.float32) * (4 / head_dim))
    coords = patch_centres(grid, device) * scale
    angles = (2 * math.pi) * coords[:, :, None] * inv_freq[None, None, :]
    angles = angles.flatten(1, 2).tile(2)
    return angles.cos(), angles.sin()


def random_rope_scale(
    rescale: float, device: torch.device | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Training-time augmentation: one log-uniform scale in [1/rescale, rescale] for the whole batch."""
    log_range = math.log(rescale)
    return torch.empty((), device=device).uniform_(-log_range, log_range, generator=generator).exp()


def swap_halves(x: torch.Tensor) -> torch.Tensor:
    """[a, b] -> [b, a] along the last dim, in one copy."""
    return x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)


def signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """The sin table that turns `swap_halves` into "rotate half": rotate_half(x) * sin == swap_halves(x) *
    signed_sin(sin)."""
    first, second = sin.chunk(2, dim=-1)
    return torch.cat((-first, second), dim=-1)


def rope_tables(cos: torch.Tensor, sin: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin (P, head_dim) for the last P of `length` tokens -> (length, head_dim) cos and signed sin.

    The prefix gets identity rows in these (small) tables instead of splitting and re-joining x,
    so `rotate` is three passes over x; DeltaTok builds them once per pass for all its blocks.
    Tables per sample, (B, P, head_dim), give (B, 1, length, head_dim): one row set per sample, for every head.
    """
    prefix = length - cos.shape[-2]
    sin = signed_sin(sin)
    if prefix:
        cos = torch.cat((cos.new_ones(*cos.shape[:-2], prefix, cos.shape[-1]), cos), dim=-2)
        sin = torch.cat((sin.new_zeros(*sin.shape[:-2], prefix, sin.shape[-1]), sin), dim=-2)
    if cos.ndim == 3:
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return cos, sin


def rotate(x: torch.Tensor, cos: torch.Tensor, signed: torch.Tensor) -> torch.Tensor:
    """x (B, heads, L, head_dim) rotated by `rope_tables` rows, (L, head_dim) or (B, 1, L, head_dim)."""
    return torch.addcmul(x * cos.to(x.dtype), swap_halves(x), signed.to(x.dtype))
