"""Tokenizer = frozen backbone + DeltaTok: uint8 frames -> features -> one delta token per frame.

Saved as a folder: `config.yaml` (the `backbone` and `model` sections),
`deltatok.safetensors` (keys as in the released checkpoint) and, for the
random-init backbone only, `backbone.safetensors`, so the folder is complete
offline. A pretrained backbone is loaded again by its hub id or path.
`from_pretrained` also takes a Hub id: the released `Amazon-FAR/deltatok-kinetics`
(tokenizer.released) or a folder pushed with `push_to_hub`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from tokenizer.backbone import RANDOM_INIT_NAME, Backbone, BackboneConfig
from tokenizer.deltatok import DeltaTok, DeltaTokConfig
from tokenizer.released import TOKENIZER, released_model
from tokenizer.runtime.config import merge_config, read_saved_config, save_config, to_object
from tokenizer.runtime.errors import CheckpointError, ConfigError, InputError
from tokenizer.runtime.files import load_module_weights, load_weights, save_safetensors
from tokenizer.runtime.hub import push_folder, resolve

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "deltatok.safetensors"
BACKBONE_FILE = "backbone.safetensors"


@dataclass
class TokenizerConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    model: DeltaTokConfig = field(default_factory=DeltaTokConfig)


class Tokenizer(nn.Module):
    """DeltaTok with its frozen backbone: frames uint8 (B, T, 3, H, W) -> delta tokens (B, T, D), one per frame
    (`tokenize`; the first against a black frame), and tokens back to backbone features (B, N, D) (`decode`).

    Get one with `Tokenizer.from_pretrained(id_or_folder)` (the released `Amazon-FAR/deltatok-kinetics`, a folder
    `save_pretrained` or `train_tokenizer.py` wrote), or `Tokenizer.build(TokenizerConfig(...))` for a fresh one.
    """

    def __init__(self, backbone: Backbone, deltatok: DeltaTok, config: TokenizerConfig):
        super().__init__()
        self.backbone = backbone
        self.deltatok = deltatok
        self.config = config
        self._black: dict[tuple, torch.Tensor] = {}

    @classmethod
    def build(cls, config: TokenizerConfig, cache_dir: str | Path | None = None) -> Tokenizer:
        """Fresh DeltaTok weights on the configured backbone (a pretrained one through the Hub cache, `cache_dir`)."""
        backbone = Backbone.from_config(config.backbone, cache_dir)
        deltatok = DeltaTok(config.model, backbone.hidden_size, backbone.num_heads)
        return cls(backbone, deltatok, config)

    @property
    def dim(self) -> int:
        return self.backbone.hidden_size

    def grid(self, frames: torch.Tensor) -> tuple[int, int]:
        return self.backbone.grid(frames.shape[-2], frames.shape[-1])

    def check_frame_size(self, size: int) -> None:
        """Raise InputError unless square frames of `size` pixels cut into whole patches; a run checks its
        data.frame_size with this (through tokenizer.data.registry.build_dataset) before it writes anything."""
        self.backbone.grid(size, size)

    def rope(self, grid: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return self.deltatok.rope(grid, device)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (B, T, 3, H, W) -> frozen patch features (B, T, N, D)."""
        return self.backbone(frames)

    def black_features(self, batch: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """Features of an all-black frame, (batch, N, D): what token 0 encodes the first frame against."""
        key = (height, width, str(device), torch.is_autocast_enabled())
        if key not in self._black:
            black = torch.zeros(1, 1, 3, height, width, dtype=torch.uint8, device=device)
            self._black[key] = self.backbone(black)[:, 0]
        return self._black[key].expand(batch, -1, -1)

    @torch.no_grad()
    def tokenize(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 frames (B, T, 3, H, W) -> (tokens (B, T, D), features (B, T, N, D)).

        Token t encodes the change from frame t-1 to t; token 0 the change from a black frame.
        """
        features = self.features(frames)
        return self.tokenize_features(features, frames.shape[-2:]), features

    def tokenize_features(
        self, features: torch.Tensor, frame_size: tuple[int, int], prev: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tokens (B, T, D) of frames of `frame_size` (H, W) whose features (B, T, N, D) are already known.

        Token 0 encodes the change from `prev` (B, N, D), by default the black frame's features.
        """
        height, width = frame_size
        if prev is None:
            prev = self.black_features(features.shape[0], height, width, features.device)
        rope = self.rope(self.backbone.grid(height, width), features.device)
        return self.deltatok.tokenize(features, prev, rope)[:, :, 0]

    def decode(self, tokens: torch.Tensor, prev: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """tokens (B, D) decoded against prev features (B, N, D) -> next features (B, N, D)."""
        rope = self.rope(grid, tokens.device)
        return self.deltatok.decode(tokens.unsqueeze(1), prev, rope)

    @torch.no_grad()
    def rollout(
        self, frames: torch.Tensor, horizon: int, features: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The paper's tokenizer evaluation at horizon h, from uint8 frames (B, T, 3, H, W).

        `features` (B, T, N, D) of those frames may be passed when already computed.
        Returns preds and targets (B, h, N, D) and context (B, T-h, N, D).
        """
        num_frames = frames.shape[1]
        if not 1 <= horizon <= num_frames:
            raise InputError(f"horizon {horizon} must be between 1 and the clip length {num_frames}")
        if features is None:
            features = self.features(frames)
        batch, _, _, height, width = frames.shape
        rope = self.rope(self.grid(frames), frames.device)
        black = self.black_features(batch, height, width, frames.device)
        preds = self.deltatok.rollout(features, horizon, black, rope)
        return {
            "preds": preds,
            "targets": features[:, num_frames - horizon :],
            "context": features[:, : num_frames - horizon],
        }

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_safetensors(self.deltatok.state_dict(), folder / WEIGHTS_FILE)
        if not self.backbone.is_pretrained:
            save_safetensors(self.backbone.model.state_dict(), folder / BACKBONE_FILE)
        save_config(self.config, folder / CONFIG_FILE)

    def push_to_hub(
        self, repo_id: str, private: bool | None = None, token: str | None = None, commit_message: str | None = None
    ) -> str:
        """Upload the `save_pretrained` folder as model repo `repo_id`; `Tokenizer.from_pretrained(repo_id)` loads it
        back."""
        return push_folder(self.save_pretrained, repo_id, "tokenizer", private, token, commit_message=commit_message)

    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        config: TokenizerConfig | None = None,
        *,
        backbone: str | None = None,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        device: str | torch.device | None = None,
    ) -> Tokenizer:
        """Load a tokenizer, in eval mode, from a Hub id, our saved folder, or a DeltaTok weights file.

        `source`: a released id (`Amazon-FAR/deltatok-kinetics`, its config from tokenizer.released), a Hub
        repo or local folder written by `save_pretrained` / `push_to_hub` (always loaded with the config it
        carries), or a bare weights file (.bin/.pt/.safetensors) whose `config` must be given; a given `config`
        also replaces a released model's. `backbone` replaces a pretrained backbone's hub id with another id or a local
        DINOv3 folder (the offline way to the gated DINOv3); a random-init backbone, saved in the folder, stays.
        `revision` and `cache_dir` are the Hub's; `device` is where the weights go.
        """
        released = released_model(source, TOKENIZER)
        path = resolve(source, "tokenizer", revision, cache_dir)
        own_folder = path.is_dir() and (path / CONFIG_FILE).is_file()
        if own_folder:
            config = read_tokenizer_config(path)
            weights = path / WEIGHTS_FILE
        elif released is not None:
            config = config or to_object(
                merge_config(TokenizerConfig, released.config, origin=f"released {released.repo_id}")
            )
            weights = path / released.filename if path.is_dir() else path
        elif path.is_dir():
            raise CheckpointError(
                f"{source} holds no {CONFIG_FILE}: pass a folder written by save_pretrained, a released id, a local "
                "copy of one under its repo's name (deltatok-kinetics/), or the weights file with its config (e.g. "
                "configs/tokenizer/vitb_dinov3_kinetics.yaml)"
            )
        elif config is None:
            raise ConfigError(
                f"{source} is a bare weights file: pass the tokenizer config it was trained with "
                "(e.g. configs/tokenizer/vitb_dinov3_kinetics.yaml), or load a released model by its id"
            )
        else:
            weights = path
        # A random-init backbone lives in the folder itself; only a fetched one can come from elsewhere.
        if backbone and config.backbone.name != RANDOM_INIT_NAME:
            config = replace(config, backbone=replace(config.backbone, name=str(backbone)))
        tokenizer = cls.build(config, cache_dir)
        if own_folder and not tokenizer.backbone.is_pretrained:
            if not (path / BACKBONE_FILE).is_file():
                raise CheckpointError(f"tokenizer folder {path} lacks {BACKBONE_FILE} for its random-init backbone")
            load_module_weights(
                tokenizer.backbone.model, load_weights(path / BACKBONE_FILE), f"backbone weights {path / BACKBONE_FILE}"
            )
        state = load_weights(weights, f"tokenizer checkpoint {weights}")
        # Released files may carry the frozen backbone under `backbone.`; it is loaded from its own source.
        state = {key: value for key, value in state.items() if not key.startswith("backbone.")}
        load_module_weights(tokenizer.deltatok, state, f"tokenizer checkpoint {weights}")
        return tokenizer.to(device).eval() if device is not None else tokenizer.eval()


@dataclass
class TokenizerSource:
    """Which saved tokenizer a command loads: the `tokenizer` section of every command that reads one."""

    # A tokenizer folder (a train_tokenizer.py run's final/) or its Hub id, the released id
    # Amazon-FAR/deltatok-kinetics, or a DeltaTok weights file (.bin/.pt/.safetensors) described by the
    # `backbone` and `model` sections below (folders and released ids carry their own config; for those, a
    # backbone.name other than random-init-dinov3 replaces a pretrained DINOv3, e.g. with a local copy of it).
    checkpoint: str | None = "runs/tokenizer_tiny/final"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # a weights file's backbone (see checkpoint)
    model: DeltaTokConfig = field(default_factory=DeltaTokConfig)  # a weights file's DeltaTok (see checkpoint)

    @property
    def backbone_override(self) -> str | None:
        """The DINOv3 source replacing a folder's or released model's pretrained one; None keeps theirs."""
        return self.backbone.name if self.backbone.name != RANDOM_INIT_NAME else None

    def load(self, device: str | torch.device | None = None) -> Tokenizer:
        """The tokenizer `checkpoint` names, in eval mode, on `device`."""
        if not self.checkpoint:
            raise ConfigError("tokenizer.checkpoint is not set: pass a tokenizer folder, file or Hub id")
        # A weights file needs its description; folders and released ids bring their own.
        described = None if released_model(self.checkpoint) is not None else TokenizerConfig(self.backbone, self.model)
        return Tokenizer.from_pretrained(self.checkpoint, described, backbone=self.backbone_override, device=device)


def read_tokenizer_config(folder: str | Path) -> TokenizerConfig:
    """The `backbone` and `model` sections of a saved tokenizer's (or training run's) config.yaml."""
    return read_saved_config(TokenizerConfig, folder, "tokenizer")
