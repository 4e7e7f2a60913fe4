"""DeltaTok: a frozen DINOv3 backbone and a ViT that turns each frame's change into one delta token.

What a user imports, from one place:

    from tokenizer import Tokenizer
    tokenizer = Tokenizer.from_pretrained("Amazon-FAR/deltatok-kinetics")   # or a folder we saved
    tokens, features = tokenizer.tokenize(frames)                           # uint8 (B, T, 3, H, W)

Names are imported on first use, so `import tokenizer.data` or `tokenizer.runtime` stays light.

Exports:
    Tokenizer           DeltaTok with its frozen backbone: frames -> one delta token per frame -> features
    TokenizerConfig     a tokenizer's backbone and DeltaTok sections
    Backbone            the frozen DINOv3 ViT (Hub id, local folder, or the embedded random-init one)
    BackboneConfig      which backbone, and its size when built from scratch
    DeltaTok            the trainable encoder and decoder of the change between two frames
    DeltaTokConfig      DeltaTok's blocks, token width and training options
    TokenizerRunConfig  everything `train_tokenizer.py` reads
    RELEASED            the released Amazon-FAR models by Hub id, with the configs their repos lack
    ReleasedModel       one released model: its repo, kind, file and config
    DataConfig          the `data` section of every command: which frames, how many, how big
    build_dataset       the train or validation clips a `DataConfig` names
    load_config         a config dataclass from defaults, a YAML file and dotted overrides
    read_clip           frames and timestamps of one video file
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Tokenizer": "tokenizer.model",
    "TokenizerConfig": "tokenizer.model",
    "Backbone": "tokenizer.backbone",
    "BackboneConfig": "tokenizer.backbone",
    "DeltaTok": "tokenizer.deltatok",
    "DeltaTokConfig": "tokenizer.deltatok",
    "TokenizerRunConfig": "tokenizer.run_config",
    "RELEASED": "tokenizer.released",
    "ReleasedModel": "tokenizer.released",
    "DataConfig": "tokenizer.data.registry",
    "build_dataset": "tokenizer.data.registry",
    "load_config": "tokenizer.runtime.config",
    "read_clip": "tokenizer.data.sources",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tokenizer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
