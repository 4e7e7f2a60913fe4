"""Gymnasium worlds and planning for DeltaWorld; importing this package registers `deltaworld/Shapes-v0` and
`deltaworld/Dream-v0`.

Exports:
    ShapesEnv               the synthetic Shapes world as a Gymnasium env (an agent moved by 2-D actions)
    ShapesWorld             the Shapes simulator itself
    ShapesConfig            everything that defines a Shapes world
    ShapesFrame             one rendered Shapes frame and its ground truth
    ShapesClips             seeded Shapes clips as a dataset
    DreamEnv                an action-conditioned world model's imagination as a Gymnasium env
    DeltaTokenObservation   wrapper: any image env's observation becomes the newest frame's delta token
    MPCAgent                plans toward a goal image in a world model and acts (receding horizon)
    Planner                 CEM or MPPI over action sequences in a Box
    PlannerConfig           the planner's kind, horizon, search budget and context
    SHAPES_ENV_ID           "deltaworld/Shapes-v0"
    DREAM_ENV_ID            "deltaworld/Dream-v0"
    CLASS_NAMES             Shapes' segmentation class names
    NUM_CLASSES             how many there are

DreamEnv, DeltaTokenObservation and the planners load torch models; they are imported on first use.
"""

import importlib

from gymnasium.envs.registration import register, registry

from envs.shapes import ShapesEnv
from tokenizer.data.shapes import CLASS_NAMES, NUM_CLASSES, ShapesClips, ShapesConfig, ShapesFrame, ShapesWorld

SHAPES_ENV_ID = "deltaworld/Shapes-v0"
DREAM_ENV_ID = "deltaworld/Dream-v0"

# The registry is process-global and this module may be re-imported (reloads, test collection).
if SHAPES_ENV_ID not in registry:
    register(id=SHAPES_ENV_ID, entry_point="envs.shapes:ShapesEnv", max_episode_steps=100)
# The dream env loads torch models, so it is imported only when made.
if DREAM_ENV_ID not in registry:
    register(id=DREAM_ENV_ID, entry_point="envs.dream:DreamEnv", max_episode_steps=50)

_LAZY = {
    "DreamEnv": "envs.dream",
    "DeltaTokenObservation": "envs.wrappers",
    "MPCAgent": "envs.planners",
    "Planner": "envs.planners",
    "PlannerConfig": "envs.planners",
}
__all__ = [
    "CLASS_NAMES",
    "DREAM_ENV_ID",
    "NUM_CLASSES",
    "SHAPES_ENV_ID",
    "DeltaTokenObservation",
    "DreamEnv",
    "MPCAgent",
    "Planner",
    "PlannerConfig",
    "ShapesClips",
    "ShapesConfig",
    "ShapesEnv",
    "ShapesFrame",
    "ShapesWorld",
]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'envs' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
