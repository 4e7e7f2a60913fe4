"""DeltaWorld: a transformer over the history of delta tokens that imagines the next ones, and what reads them.

What a user imports, from one place:

    from worldmodel import load_world_model
    world = load_world_model("Amazon-FAR/deltaworld-kinetics")             # or a folder we saved
    futures = world.predict(frames, timestamps, horizon=3, num_samples=8)  # features (B, K, h, N, D)

Importing the package imports both kinds of world model (and with them torch and transformers); the other
names are imported on first use.
"""

from __future__ import annotations

import importlib

# Each kind of world model registers itself with WorldModel when its module runs (`model.kind` -> class):
# importing both here lets WorldModel.build and from_pretrained make either, whatever was imported first.
import worldmodel.deltaworld  # noqa: F401
import worldmodel.dinoworld  # noqa: F401

# The token cache registers itself as data.source=tokens with tokenizer.data.registry when its reader runs.
import worldmodel.token_clips  # noqa: F401

_EXPORTS = {
    "WorldModel": "worldmodel.world",
    "WorldModelConfig": "worldmodel.world",
    "load_world_model": "worldmodel.loading",
    "build_world_model": "worldmodel.loading",
    "DeltaWorld": "worldmodel.deltaworld",
    "DINOWorld": "worldmodel.dinoworld",
    "WorldModelRunConfig": "worldmodel.run_config",
    "SegmentationHead": "worldmodel.heads",
    "DepthHead": "worldmodel.heads",
    "RGBHead": "worldmodel.rgb_head",
    "TaskHeads": "worldmodel.heads",
    "load_head": "worldmodel.heads",
    "load_heads": "worldmodel.heads",
    "RolloutEvaluator": "worldmodel.evaluation",
    "RolloutEvalConfig": "worldmodel.evaluation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'worldmodel' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
