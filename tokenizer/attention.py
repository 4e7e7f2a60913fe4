"""One attention call for every model: PyTorch SDPA by default, xformers optionally on GPU.

SDPA already dispatches to flash / memory-efficient kernels on CUDA and to a
fused kernel on CPU. xformers (`pip install -e .[gpu]`) is offered for GPUs
and PyTorch builds where its memory-efficient kernel is faster; a model opts in
with `set_attention_backend(model, "xformers")`, and CPU tensors always use SDPA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.runtime.errors import ConfigError

BACKENDS = ("sdpa", "xformers")


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    backend: str = "sdpa",
) -> torch.Tensor:
    """q (B, heads, Lq, d), k/v (B, heads, Lk, d), additive or boolean mask broadcastable to (B, heads, Lq, Lk)."""
    if backend == "xformers" and q.is_cuda:
        return _xformers_attention(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _xformers_attention(q, k, v, mask):
    import xformers.ops as xops

    bias = None
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, float("-inf"))
        bias = mask.to(q.dtype).expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    # xformers wants (B, L, heads, d).
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
    return out.transpose(1, 2)


def set_attention_backend(model: nn.Module, backend: str) -> None:
    """Switch every attention layer of `model` that has an `attn_backend` attribute."""
    if backend not in BACKENDS:
        raise ConfigError(f"attention backend {backend!r} is not one of {BACKENDS}")
    if backend == "xformers":
        try:
            import xformers.ops  # noqa: F401
        except ImportError:
            raise ConfigError("attention backend 'xformers' needs the GPU extra: pip install -e '.[gpu]'") from None
    for module in model.modules():
        if hasattr(module, "attn_backend"):
            module.attn_backend = backend
