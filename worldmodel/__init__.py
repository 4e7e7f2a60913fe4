"""DeltaWorld: a transformer over the history of delta tokens that imagines the next ones, and what reads them.

What a user imports, from one place:

    from worldmodel import load_world_model
    world = load_world_model("Amazon-FAR/deltaworld-kinetics")             # or a folder we saved
    futures = world.predict(frames, timestamps, horizon=3, num_samples=8)  # features (B, K, h, N, D)

Importing the package imports both kinds of world model (and with them torch and transformers); the other
names are imported on first use.

Exports:
    WorldModel           what DeltaWorld and DINOWorld share: imagining, saving, loading
    WorldModelConfig     a world model's predictor, objective, actions and readout
    DeltaWorld           the predictor over delta tokens (one token per frame)
    DINOWorld            the patch-level baseline (every patch predicted)
    load_world_model     a world model from a Hub id, a saved folder or a released file
    build_world_model    a fresh world model of a config around a tokenizer
    WorldModelRunConfig  everything `train_world_model.py` reads
    SegmentationHead     linear segmentation probe on backbone features
    DepthHead            linear depth probe (binned) on backbone features
    RGBHead              ViT decoder from backbone features to pixels
    TaskHeads            the heads of one folder, read together
    load_head            one head from a Hub id or folder
    load_heads           every head of a `train_heads.py` run or the released ids
    RolloutEvaluator     scores imagined futures against the truth (rollout.py's engine)
    RolloutEvalConfig    what a rollout scores: horizons, samples, heads
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
    "load_world_model": "worldmodel.world",
    "build_world_model": "worldmodel.world",
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
