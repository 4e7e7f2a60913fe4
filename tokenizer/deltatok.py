"""DeltaTok: the change between two frames' features, compressed into one token.

encode: [query token(s), prev features + xy_embed[0], next features + xy_embed[1]]
        -> encoder blocks -> LayerNorm of the (mean) query output = the delta token (B, 1, D)
        (model.encoder_input: next - prev in place of next, or next - prev alone)
decode: [delta token, prev features] -> decoder blocks -> patch outputs = next features (B, N, D)

In non-delta mode the encoder sees only the next frame and the decoder only a
learned placeholder in place of the previous features, so the token must carry
the whole frame (the paper's ablation). Widths and heads come from the backbone:
tokens live in the backbone's feature space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.blocks import Block
from tokenizer.rope import patch_rope, random_rope_scale, rope_tables
from tokenizer.runtime.errors import ConfigError


def log_cosh(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DeltaTok's training criterion, elementwise log(cosh(pred - target)), finite for large differences."""
    diff = (pred.float() - target.float()).abs()
    return diff + F.softplus(-2.0 * diff) - math.log(2.0)


ENCODER_INPUTS = ("next", "difference", "difference_only")


@dataclass
class DeltaTokConfig:
    """DeltaTok's encoder and decoder (tokenizer.deltatok); their width and heads are the backbone's."""

    num_layers: int = 2  # decoder blocks, and the encoder's unless encoder_layers says otherwise (12 + 12 in the paper)
    # Encoder blocks when they should differ from the decoder's; 0 = num_layers, as in the paper.
    encoder_layers: int = 0
    # Learned query tokens that pool the encoder's patches; the token is the mean of their outputs. 1 = the paper.
    encoder_queries: int = 1
    mlp_hidden_size: int = 256  # SwiGLU hidden size: 2 * I // 3 for an MLP size I (2048 at ViT-B)
    # true: the decoder also reads the previous frame's features, so the token carries only the change; false:
    # the encoder sees the next frame alone and the token must carry all of it (the paper's non-delta ablation).
    use_delta: bool = True
    # What the encoder sees: "next" (the paper: prev and next), "difference" (prev and next - prev), which hands
    # it the change directly instead of two nearly equal frames whose pooled average hides the change, or
    # "difference_only" (next - prev alone: half the encoder's sequence, the step about 0.7x the time; xy_embed[0]
    # is then unused but kept, so every input saves the same weights).
    encoder_input: str = "next"
    # With difference_only: the encoder reads only the k patches whose features change most (squared norm of
    # next - prev, per pair; ties go to the lower patch index), each at its own RoPE position; 0 = every patch,
    # as the paper. Where the change is local (a static camera: most of a frame's difference is nearly zero)
    # this cuts the encoder's sequence and its cost with it; where every patch changes (a moving camera, and
    # the first token of a clip, encoded from the black frame) it drops part of the change.
    encoder_top_k: int = 0
    use_qk_norm: bool = True  # LayerNorm (no bias) on each head's queries and keys, after RoPE
    use_gated_attn: bool = True  # per-head sigmoid gate on the attention output, from the block's normed input
    use_swiglu: bool = True  # SwiGLU MLP; false: a GELU MLP
    layer_scale_init: float = 1e-5  # initial LayerScale of every residual branch (the paper's 1e-5)
    rope_theta: float = 100.0  # base of the 2-D RoPE frequencies over patch positions
    # Training-time RoPE scale jitter, log-uniform in [1/r, r] (DINOv3's pos_embed_rescale); 0 turns it off.
    rope_rescale: float = 2.0
    layer_norm_eps: float = 1e-5  # epsilon of every LayerNorm
    initializer_range: float = 0.02  # std of the truncated-normal initialisation of linear weights and embeddings


class DeltaTok(nn.Module):
    """The trainable half of the tokenizer: a ViT encoder that compresses the change between two frames' backbone
    features (B, N, D) into one token (B, D), and a ViT decoder that rebuilds the next frame's features (B, N, D)
    from the previous ones plus that token. Built from a `DeltaTokConfig` inside a `Tokenizer`, which users hold.
    """

    def __init__(self, cfg: DeltaTokConfig, dim: int, num_heads: int):
        super().__init__()
        if cfg.num_layers < 1:
            raise ConfigError(f"model.num_layers must be at least 1, got {cfg.num_layers}")
        if cfg.encoder_layers < 0:
            raise ConfigError(f"model.encoder_layers must be at least 1, or 0 for num_layers, got {cfg.encoder_layers}")
        if cfg.encoder_queries < 1:
            raise ConfigError(f"model.encoder_queries must be at least 1, got {cfg.encoder_queries}")
        if cfg.encoder_input not in ENCODER_INPUTS:
            raise ConfigError(f"model.encoder_input {cfg.encoder_input!r} is not one of {', '.join(ENCODER_INPUTS)}")
        if cfg.encoder_top_k < 0:
            raise ConfigError(
                f"model.encoder_top_k must be 0 (every patch) or a number of patches, got {cfg.encoder_top_k}"
            )
        if cfg.encoder_top_k and cfg.encoder_input != "difference_only":
            raise ConfigError(
                f"model.encoder_top_k={cfg.encoder_top_k} needs model.encoder_input=difference_only: "
                f"it picks patches by how much they change, and the other inputs read whole frames"
            )
        if cfg.encoder_input != "next" and not cfg.use_delta:
            raise ConfigError(
                f"model.encoder_input={cfg.encoder_input} needs model.use_delta=true: without a previous frame there "
                "is no difference"
            )
        self.cfg = cfg
        self.dim = dim
        self.num_heads = num_heads
        self.z_embed = nn.Embedding(cfg.encoder_queries, dim)
        self.xy_embed = nn.Embedding(2, dim)

        def block() -> Block:
            return Block(
                dim,
                num_heads,
                cfg.mlp_hidden_size,
                qk_norm=cfg.use_qk_norm,
                gated_attn=cfg.use_gated_attn,
                swiglu=cfg.use_swiglu,
                layer_scale_init=cfg.layer_scale_init,
                eps=cfg.layer_norm_eps,
            )

        self.encoder_blocks = nn.ModuleList(block() for _ in range(cfg.encoder_layers or cfg.num_layers))
        self.decoder_blocks = nn.ModuleList(block() for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        std = self.cfg.initializer_range
        nn.init.trunc_normal_(self.z_embed.weight, std=std)
        nn.init.trunc_normal_(self.xy_embed.weight, std=std)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def rope(
        self, grid: tuple[int, int], device: torch.device | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin (N, head_dim) for a (rows, cols) patch grid; scale-jittered while training."""
        scale = 1.0
        if self.training and self.cfg.rope_rescale > 0:
            scale = random_rope_scale(self.cfg.rope_rescale, device, generator)
        return patch_rope(grid, self.head_dim, self.cfg.rope_theta, scale, device)

    def forward(self, prev: torch.Tensor, nxt: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Reconstruction, the training path: encode prev -> nxt (B, N, D) and decode it from prev -> (B, N, D)."""
        return self.decode(self.encode(prev, nxt, rope), prev, rope)

    def encode(self, prev: torch.Tensor, nxt: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """prev, nxt features (B, N, D) -> delta token (B, 1, D)."""
        queries = self.z_embed.weight.expand(nxt.shape[0], -1, -1)
        if self.cfg.encoder_input != "next":
            nxt = nxt - prev
        if self.cfg.use_delta and self.cfg.encoder_input != "difference_only":
            hidden = torch.cat((queries, prev + self.xy_embed.weight[0], nxt + self.xy_embed.weight[1]), dim=1)
            rope = (torch.cat((rope[0], rope[0])), torch.cat((rope[1], rope[1])))
        else:
            if 0 < self.cfg.encoder_top_k < nxt.shape[1]:
                nxt, rope = self._most_changed(nxt, rope)
            hidden = torch.cat((queries, nxt + self.xy_embed.weight[1]), dim=1)
        tables = rope_tables(*rope, hidden.shape[1])  # once for every block
        *blocks, last = self.encoder_blocks
        for block in blocks:
            hidden = block(hidden, tables)
        # Only the queries' outputs are read: the last block updates those tokens alone.
        return self.norm(last(hidden, tables, queries=queries.shape[1]).mean(dim=1, keepdim=True))

    def _most_changed(
        self, difference: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """difference (B, N, D), cos/sin (N, head_dim) -> its `encoder_top_k` largest patches (B, k, D) and their
        cos/sin (B, k, head_dim)."""
        # A stable sort, not topk, so that ties (e.g. two identical frames) pick the same patches on every device.
        change = difference.detach().square().sum(dim=-1)
        index = change.sort(dim=1, descending=True, stable=True).indices[:, : self.cfg.encoder_top_k]  # (B, k)
        picked = difference.gather(1, index.unsqueeze(-1).expand(-1, -1, difference.shape[-1]))
        cos, sin = (table[index] for table in rope)
        return picked, (cos, sin)

    def decode(self, token: torch.Tensor, prev: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """delta token (B, 1, D) and prev features (B, N, D) -> next features (B, N, D)."""
        if not self.cfg.use_delta:
            prev = self.xy_embed.weight[0].expand_as(prev)
        hidden = torch.cat((token, prev), dim=1)
        tables = rope_tables(*rope, hidden.shape[1])
        for block in self.decoder_blocks:
            hidden = block(hidden, tables)
        return hidden[:, 1:]

    def tokenize(self, features: torch.Tensor, first_prev: torch.Tensor, rope) -> torch.Tensor:
        """One token per frame, all frames in one batch: features (B, T, N, D) -> tokens (B, T, 1, D).

        Token t encodes frame t-1 -> t; token 0 encodes `first_prev` (B, N, D), the
        black frame's features, -> frame 0.
        """
        prev = torch.cat((first_prev.unsqueeze(1), features[:, :-1]), dim=1)
        tokens = self.encode(prev.flatten(0, 1), features.flatten(0, 1), rope)
        return tokens.unflatten(0, features.shape[:2])

    def rollout(self, features: torch.Tensor, horizon: int, first_prev: torch.Tensor, rope) -> torch.Tensor:
        """Autoregressive reconstruction of the last `horizon` frames: (B, T, N, D) -> (B, horizon, N, D).

        Each step encodes the change from the previous reconstruction to the true
        frame and decodes it from that reconstruction, so errors can compound as
        they would when the tokens come from a predictor. The step before the
        first target starts from the true features (or the black frame when the
        clip has no context).
        """
        num_frames = features.shape[1]
        prev = first_prev if horizon == num_frames else features[:, num_frames - horizon - 1]
        preds = []
        for t in range(num_frames - horizon, num_frames):
            token = self.encode(prev, features[:, t], rope)
            prev = self.decode(token, prev, rope)
            preds.append(prev)
        return torch.stack(preds, dim=1)
