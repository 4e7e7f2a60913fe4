"""DeltaTok: a frozen DINOv3 backbone and a ViT that turns each frame's change into one delta token.

What a user imports, from one place:

    from tokenizer import Tokenizer
    tokenizer = Tokenizer.from_pretrained("Amazon-FAR/deltatok-kinetics")   # or a folder we saved
    tokens, features = tokenizer.tokenize(frames)                           # uint8 (B, T, 3, H, W)

Names are imported on first use, so `import tokenizer.data` or `tokenizer.runtime` stays light.
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
