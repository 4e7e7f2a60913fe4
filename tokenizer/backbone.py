"""The frozen DINOv3 ViT that turns frames into patch features.

uint8 frames (B, T, 3, H, W) -> [0, 1] -> ImageNet mean/std -> DINOv3ViTModel
-> last_hidden_state without the class and register tokens -> (B, T, N, D),
N = (H / p) * (W / p) in row-major patch order.

Real use loads a pretrained DINOv3 by hub id or local folder. The embedded
default is `RANDOM_INIT_NAME`: the same architecture at a small size with
seeded random weights, built offline, and never to be mistaken for pretrained.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import DINOv3ViTConfig, DINOv3ViTModel

from tokenizer.runtime.errors import CheckpointError, ConfigError, InputError
from tokenizer.runtime.files import load_module_weights

RANDOM_INIT_NAME = "random-init-dinov3"
PAPER_BACKBONE = "facebook/dinov3-vitb16-pretrain-lvd1689m"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class BackboneConfig:
    """The frozen DINOv3 ViT whose patch features the tokenizer compresses. The sizes after `name` apply to
    random-init-dinov3 only: a pretrained model brings its own."""

    # A hub id (e.g. facebook/dinov3-vitb16-pretrain-lvd1689m), a local folder
    # holding config.json + weights, or "random-init-dinov3": seeded random
    # weights, NOT pretrained, sized by the fields below (ignored otherwise).
    name: str = RANDOM_INIT_NAME
    hidden_size: int = 96  # feature width, and so the delta tokens' width (768 for ViT-B)
    num_layers: int = 2  # transformer layers
    num_heads: int = 3  # attention heads; hidden_size / num_heads must be a multiple of 4 (2-D RoPE)
    intermediate_size: int = 384  # MLP hidden size
    patch_size: int = 8  # pixels per patch side; frame sizes must be multiples of it
    num_register_tokens: int = 4  # register tokens beside the class token, dropped from the features
    seed: int = 0  # seed of the random weights


class Backbone(nn.Module):
    """Frozen DINOv3 ViT, always in eval mode (its RoPE augmentation is a training-only behaviour)."""

    def __init__(self, model: DINOv3ViTModel, name: str):
        super().__init__()
        self.model = model
        self.name = name
        config = model.config
        self.patch_size = int(config.patch_size)
        self.hidden_size = int(config.hidden_size)
        self.num_heads = int(config.num_attention_heads)
        self.initializer_range = float(config.initializer_range)
        self.num_prefix_tokens = 1 + int(config.num_register_tokens)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def is_pretrained(self) -> bool:
        return self.name != RANDOM_INIT_NAME

    @property
    def feature_norm(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The final LayerNorm's (weight, bias), each (D,), detached copies on the CPU (where heads are built before
        they are moved): an RGB head undoes them first."""
        norm = self.model.norm
        return norm.weight.detach().cpu().clone(), norm.bias.detach().cpu().clone()

    def train(self, mode: bool = True) -> Backbone:
        # Frozen means frozen: a parent's .train() must not switch on RoPE jitter or dropout here.
        return super().train(False)

    @classmethod
    def from_config(cls, cfg: BackboneConfig, cache_dir: str | Path | None = None) -> Backbone:
        if cfg.name == RANDOM_INIT_NAME:
            return cls.random_init(cfg)
        return cls.from_pretrained(cfg.name, cache_dir)

    @classmethod
    def random_init(cls, cfg: BackboneConfig) -> Backbone:
        if cfg.hidden_size % cfg.num_heads or (cfg.hidden_size // cfg.num_heads) % 4:
            raise ConfigError(
                f"backbone.hidden_size {cfg.hidden_size} must split into backbone.num_heads {cfg.num_heads} heads "
                "whose size is a multiple of 4 (2-D RoPE)"
            )
        config = DINOv3ViTConfig(
            hidden_size=cfg.hidden_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.intermediate_size,
            patch_size=cfg.patch_size,
            num_register_tokens=cfg.num_register_tokens,
        )
        # The seed fixes the weights without touching the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = DINOv3ViTModel(config)
        return cls(model, RANDOM_INIT_NAME)

    @classmethod
    def from_dinov3(cls, config: dict, state_dict: dict[str, torch.Tensor], name: str) -> Backbone:
        """Build from a DINOv3ViTConfig dict and a DINOv3ViTModel state dict (e.g. the golden file)."""
        model = DINOv3ViTModel(DINOv3ViTConfig(**config))
        load_module_weights(model, state_dict, f"backbone weights for {name}")
        return cls(model, name)

    @classmethod
    def from_pretrained(cls, name: str, cache_dir: str | Path | None = None) -> Backbone:
        """A DINOv3 by hub id (through the Hugging Face cache, `cache_dir` or HF_HUB_CACHE) or local folder."""
        local = Path(name).expanduser()
        looks_local = local.exists() or name.startswith((".", "/", "~"))
        if looks_local and not (local / "config.json").is_file():
            raise ConfigError(
                f"backbone folder {local} has no config.json; point backbone.name at a downloaded DINOv3 folder"
            )
        try:
            model = DINOv3ViTModel.from_pretrained(str(local) if looks_local else name, cache_dir=cache_dir)
        except (SafetensorError, pickle.UnpicklingError, EOFError, RuntimeError, ValueError) as err:
            # A truncated safetensors file, or a pickle that torch reads only as plain tensors (weights_only).
            first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
            raise CheckpointError(
                f"the DINOv3 backbone weights in {local if looks_local else name} cannot be read safely "
                f"({first_line}): they are truncated, corrupt, or a pickle holding more than tensors; download them "
                "again as safetensors"
            ) from None
        except OSError as err:
            if looks_local:
                raise ConfigError(
                    f"cannot load the DINOv3 backbone from {local}: {' '.join(str(err).split())[:300]}"
                ) from None
            raise ConfigError(
                f"cannot fetch the DINOv3 backbone {name!r} (offline and not in the Hugging Face cache, or its gated "
                f"license not accepted at https://huggingface.co/{name}): where you have access, `hf download {name}` "
                f"fills the cache, or `hf download {name} --local-dir DIR` makes a folder to pass as the backbone "
                "(backbone.name=DIR, or backbone=DIR when loading a tokenizer)"
            ) from None
        return cls(model, name)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, cols) of a frame, checking that the size is a multiple of the patch size."""
        if height % self.patch_size or width % self.patch_size:
            raise InputError(
                f"frame size {height}x{width} is not a multiple of the backbone patch size {self.patch_size}; "
                f"resize or crop frames to a multiple of {self.patch_size}"
            )
        return height // self.patch_size, width // self.patch_size

    @torch.no_grad()
    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, T, 3, H, W) -> patch features (B, T, N, D)."""
        if frames.dtype != torch.uint8:
            raise InputError(f"frames must be uint8 (0-255), got {frames.dtype}")
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise InputError(f"frames must have shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        batch, time, _, height, width = frames.shape
        self.grid(height, width)
        dtype = self.mean.dtype
        pixels = frames.flatten(0, 1).to(dtype) / 255.0
        pixels = (pixels - self.mean) / self.std
        hidden = self.model(pixel_values=pixels).last_hidden_state
        return hidden[:, self.num_prefix_tokens :].unflatten(0, (batch, time))
