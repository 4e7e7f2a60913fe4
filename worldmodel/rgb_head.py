"""The RGB head: a small ViT decoder from frozen backbone patch features back to pixels.

It follows the RGB head released with the paper (Amazon-FAR/rgb-head-imagenet, in
the style of RAE's decoders) closely enough that the released weights load
unchanged and give the same images:

    features (*, N, D), N = h * w row-major
      -> undo the backbone's final LayerNorm affine: (x - bias) / weight
      -> linear to the decoder width W, a learned class token in front
      -> + a fixed 2-D sine-cosine position table (bicubically resized off the native grid)
      -> pre-norm ViT blocks (LayerNorm eps 1e-12, softmax attention, GELU MLP)
      -> LayerNorm, linear to p * p * 3 values per patch, class token dropped
      -> patches laid out as an image, ImageNet mean/std undone
      -> RGB (*, 3, h * p, w * p) in [0, 1] units, not clamped

State-dict keys are the released file's (HF ViT naming): decoder_embed.*,
trainable_cls_token, decoder_layers.<i>.attention.attention.{query,key,value}.*,
decoder_layers.<i>.attention.output.dense.*, decoder_layers.<i>.{layernorm_before,
layernorm_after,intermediate.dense,output.dense}.*, decoder_norm.*, decoder_pred.*,
plus `decoder_pos_embed`, the position table. The table is not trained and the
config fixes it, so a released file may leave it out; it is a buffer saved with
the weights all the same, because the released code adds whatever table its file
holds, and only by using that table too are such files' images reproduced (the
reference vectors hold a perturbed one). A state dict without it gets the table
the config gives.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.backbone import IMAGENET_MEAN, IMAGENET_STD
from tokenizer.released import RGB
from tokenizer.runtime.errors import InputError

POSITION_KEY = "decoder_pos_embed"
# The released head's LayerNorms use this eps (HF ViT's default), not PyTorch's 1e-5.
LAYER_NORM_EPS = 1e-12


@dataclass
class RGBHeadConfig:
    """Decoder sizes; the defaults are the released rgb-head-imagenet's."""

    hidden_size: int = 1152
    num_layers: int = 28
    num_heads: int = 16
    mlp_size: int = 4096
    patch_size: int = 16  # pixels per patch side of the output
    image_size: int = 512  # native square image side: the position table covers image_size / patch_size patches a side

    def validate(self) -> None:
        sizes = asdict(self)
        if min(sizes.values()) < 1:
            raise InputError(f"RGB head sizes must all be positive, got {sizes}")
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise InputError(
                f"RGB head hidden_size {self.hidden_size} must split into num_heads {self.num_heads} heads and be a "
                "multiple of 4 (the sine-cosine table)"
            )
        if self.image_size % self.patch_size:
            raise InputError(f"RGB head image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def native_side(self) -> int:
        """Patches per side of the native grid, the one the position table is laid out on."""
        return self.image_size // self.patch_size


def sincos_table(width: int, side: int) -> torch.Tensor:
    """The fixed position table (1 + side * side, width): a zero row for the class token, then one row per patch.

    Patch n sits at row n // side, column n % side; its entry is [sin(row f), cos(row f), sin(col f), cos(col f)]
    over the width / 4 frequencies f_i = 10000^(-i / (width / 4)), computed in float64 and rounded to float32.
    """
    quarter = width // 4
    freqs = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(side, dtype=torch.float64), torch.arange(side, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for coordinate in (rows.flatten(), cols.flatten()):
        angles = coordinate[:, None] * freqs
        parts += [angles.sin(), angles.cos()]
    table = torch.cat([torch.zeros(1, width, dtype=torch.float64), torch.cat(parts, dim=1)])
    return table.float()


class _SelfAttention(nn.Module):
    """Multi-head softmax attention over all tokens; projections named as in the released file."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, W) -> (B, L, W)."""
        q, k, v = (
            proj(x).unflatten(-1, (self.num_heads, -1)).transpose(1, 2) for proj in (self.query, self.key, self.value)
        )
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)


class _Dense(nn.Module):
    """A linear layer one level down (`<name>.dense`), the nesting the released key names carry."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.dense = nn.Linear(inputs, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class _Attention(nn.Module):
    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.attention = _SelfAttention(width, num_heads)
        self.output = _Dense(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(x))


class _Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with an exact GELU."""

    def __init__(self, width: int, num_heads: int, mlp_size: int):
        super().__init__()
        self.attention = _Attention(width, num_heads)
        self.layernorm_before = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.layernorm_after = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.intermediate = _Dense(width, mlp_size)
        self.output = _Dense(mlp_size, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output(F.gelu(self.intermediate(self.layernorm_after(x))))


class RGBHead(nn.Module):
    """Patch features (*, N, D) on an (h, w) grid -> RGB (*, 3, h * p, w * p) in [0, 1] units (not clamped).

    `feature_norm` is the (weight, bias) of the backbone's final LayerNorm (`Backbone.feature_norm`),
    each (D,): the head reads the features before that affine, as it was trained. Any grid works;
    off the native one the position table is resized by bicubic interpolation.
    """

    kind = RGB

    def __init__(
        self,
        in_dim: int,
        feature_norm: tuple[torch.Tensor, torch.Tensor],
        config: RGBHeadConfig | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__()
        config = config or RGBHeadConfig()
        config.validate()
        weight, bias = (torch.as_tensor(t).detach().float().clone() for t in feature_norm)
        if weight.shape != (in_dim,) or bias.shape != (in_dim,):
            raise InputError(
                f"feature_norm must be the backbone's final LayerNorm (weight, bias), each ({in_dim},), "
                f"got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        if len(image_mean) != 3 or len(image_std) != 3:
            raise InputError(
                f"image_mean and image_std must hold 3 values (R, G, B), got {list(image_mean)} and {list(image_std)}"
            )
        self.in_dim = in_dim
        self.sizes = config
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        width = config.hidden_size
        self.decoder_embed = nn.Linear(in_dim, width)
        self.trainable_cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.decoder_layers = nn.ModuleList(
            _Block(width, config.num_heads, config.mlp_size) for _ in range(config.num_layers)
        )
        self.decoder_norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.decoder_pred = nn.Linear(width, config.patch_size**2 * 3)
        # Not in a released file: the backbone's affine and the image statistics are the caller's to give.
        self.register_buffer("norm_weight", weight, persistent=False)
        self.register_buffer("norm_bias", bias, persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(self.image_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(self.image_std).view(3, 1, 1), persistent=False)
        # Shaped (1, 1 + n * n, W) as the released files store it.
        self.register_buffer(POSITION_KEY, sincos_table(width, config.native_side)[None])
        # Runs inside load_state_dict, however deeply this head is nested, so files without the table load too.
        self.register_load_state_dict_pre_hook(self._fill_position_table)

    def _fill_position_table(self, module: nn.Module, state: dict[str, torch.Tensor], prefix: str, *_) -> None:
        if prefix + POSITION_KEY not in state:
            state[prefix + POSITION_KEY] = sincos_table(self.sizes.hidden_size, self.sizes.native_side)[None]

    def with_position_table(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` as a new dict, with the config's position table added when it holds none."""
        filled = dict(state)
        self._fill_position_table(self, filled, "")
        return filled

    def _positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position table for an (h, w) grid: (1 + h * w, W)."""
        table = getattr(self, POSITION_KEY)[0]
        side = self.sizes.native_side
        if tuple(grid) == (side, side):
            return table
        patches = table[1:].T.reshape(1, -1, side, side)
        resized = F.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False)
        return torch.cat([table[:1], resized.flatten(2)[0].T])

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(*, N, D), N = h * w row-major -> RGB (*, 3, h * p, w * p) in [0, 1] units, not clamped."""
        h, w = grid
        if features.ndim < 2 or features.shape[-2] != h * w or features.shape[-1] != self.in_dim:
            raise InputError(
                f"features must have shape (..., N, D) with N = {h}*{w} = {h * w} patches and D = {self.in_dim}, "
                f"got {tuple(features.shape)}"
            )
        lead = features.shape[:-2]
        x = features.reshape(-1, h * w, self.in_dim)
        x = self.decoder_embed((x - self.norm_bias) / self.norm_weight)
        x = torch.cat([self.trainable_cls_token.expand(len(x), -1, -1), x], dim=1) + self._positions((h, w))
        for block in self.decoder_layers:
            x = block(x)
        # Norm and projection act per token, so the class token can be dropped before them.
        patches = self.decoder_pred(self.decoder_norm(x[:, 1:]))  # (M, h * w, p * p * 3), each patch (row, col, RGB)
        p = self.sizes.patch_size
        image = patches.reshape(-1, h, w, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(-1, 3, h * p, w * p)
        image = image * self.pixel_std + self.pixel_mean
        return image.reshape(*lead, 3, h * p, w * p)

    @torch.no_grad()
    def render(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(*, N, D) -> uint8 frames (*, 3, h * p, w * p): the prediction clamped to [0, 1] and rounded to 0-255."""
        return (self(features, grid).clamp(0, 1) * 255).round().to(torch.uint8)

    def config(self) -> dict:
        """Everything but the weights and the backbone's affine: kind, feature width, sizes, image mean/std."""
        return {
            "kind": self.kind,
            "in_dim": self.in_dim,
            **asdict(self.sizes),
            "image_mean": self.image_mean,
            "image_std": self.image_std,
        }


def pixel_target(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 frames (M, 3, H, W) -> float pixels (M, 3, h, w) in [0, 1], resized (antialiased) when an RGB head's size
    differs."""
    pixels = frames.float() / 255.0
    if tuple(pixels.shape[-2:]) != tuple(size):
        pixels = F.interpolate(pixels, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return pixels
