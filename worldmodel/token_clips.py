"""A token cache read as training clips: the `tokens` source of `data.source`.

`python -m worldmodel.token_cache` makes the cache (its docstring describes the files); this module
reads it and registers the source with tokenizer.data.registry when `worldmodel` is imported, so
`build_dataset` serves it like any other source. Only a world model that declares `trains_on_tokens`
can train on it, and validation still needs frames (data.val_source): it imagines and decodes features.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch.utils.data import Dataset

from tokenizer.data.registry import DataConfig, frame_spacing, register_source
from tokenizer.model import Tokenizer
from tokenizer.runtime.config import merge_config, to_object
from tokenizer.runtime.errors import CheckpointError, ConfigError
from tokenizer.runtime.files import load_weights, weights_digest
from worldmodel.world import WorldModel

TOKENS_SOURCE = "tokens"
PLAN, MANIFEST = "plan.json", "manifest.json"


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's config and of every weight (backbone and DeltaTok): equal iff it tokenizes alike."""
    config = OmegaConf.to_yaml(OmegaConf.structured(tokenizer.config))
    return hashlib.sha256(config.encode() + weights_digest(tokenizer).encode()).hexdigest()


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not readable JSON ({err})") from None


class TokenClips(Dataset):
    """A token cache as training clips: item i = cached clip i % num_clips, {"tokens" (T, D), "timestamps" (T,),
    "actions"?}.

    Refuses a cache made with another tokenizer than the one training decodes with, and
    one whose clips are shorter than `num_frames`; longer clips are cut to their first frames.
    """

    labels_last_frame_only = False  # no labels at all

    def __init__(self, root: str | Path, num_frames: int, fingerprint: str, tokenizer_name: str):
        root = Path(root)
        if not (root / MANIFEST).is_file():
            hint = (
                "it is incomplete: run the same cache command again to finish it"
                if (root / PLAN).is_file()
                else "make one with python -m worldmodel.token_cache"
            )
            raise ConfigError(f"data.root={root} is not a token cache ({MANIFEST} missing); {hint}")
        manifest = read_json(root / MANIFEST)
        if manifest["tokenizer"] != fingerprint:
            raise ConfigError(
                f"token cache {root} was made with tokenizer {manifest['tokenizer_checkpoint']} "
                f"({manifest['tokenizer'][:12]}), not with tokenizer.checkpoint={tokenizer_name} "
                f"({fingerprint[:12]}); make the cache again with this tokenizer"
            )
        if manifest["num_frames"] < num_frames:
            raise ConfigError(
                f"token cache {root} holds clips of {manifest['num_frames']} frames; data.num_frames={num_frames} "
                "asks for more"
            )
        parts: dict[str, list[torch.Tensor]] = {}
        for shard in manifest["shards"]:
            state = load_weights(root / shard["file"], f"token cache shard {root / shard['file']}")
            for key, value in state.items():
                parts.setdefault(key, []).append(value[:, :num_frames])
        self.tensors = {key: torch.cat(values) for key, values in parts.items()}
        self.num_clips = len(self.tensors["tokens"])
        if self.num_clips != manifest["num_clips"]:
            raise CheckpointError(
                f"token cache {root} holds {self.num_clips} clips, its manifest says {manifest['num_clips']}"
            )

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, sample_id: int) -> dict[str, torch.Tensor]:
        index = int(sample_id) % self.num_clips
        return {key: value[index].float() for key, value in self.tensors.items()}


def build_token_clips(
    cfg: DataConfig,
    root: str,
    train: bool,
    num_frames: int,
    seed: int,
    world: WorldModel | None = None,
    tokenizer_name: str = "",
    **context: Any,
) -> TokenClips:
    """The clips of the cache at data.root for training `world`; `tokenizer_name` is where its tokenizer came from."""
    if world is None:
        raise ConfigError(
            f"data.source={TOKENS_SOURCE} holds delta tokens for train_world_model.py; this command needs frames"
        )
    if not world.trains_on_tokens:
        raise ConfigError(
            f"data.source={TOKENS_SOURCE} trains on delta tokens; model.kind={world.config.kind} needs frames"
        )
    if not cfg.val_source or cfg.val_source == TOKENS_SOURCE:
        raise ConfigError(
            f"data.source={TOKENS_SOURCE} needs data.val_source, a source of frames (e.g. shapes): validation "
            "imagines and decodes features"
        )
    return TokenClips(root, num_frames, tokenizer_fingerprint(world.tokenizer), tokenizer_name)


def token_cache_spacing(cfg: DataConfig, root: str, train: bool) -> tuple[float, float]:
    """The spacing of the frames the cache at data.root was tokenized from, as its plan records their data.*."""
    if not root:
        raise ConfigError(f"data.source={TOKENS_SOURCE} needs data.root, the folder of a token cache")
    plan = read_json(Path(root) / PLAN)
    return frame_spacing(to_object(merge_config(DataConfig, plan["data"], origin=f"{root}/{PLAN} data")), "train")


register_source(TOKENS_SOURCE, TokenClips, build_token_clips, token_cache_spacing)
