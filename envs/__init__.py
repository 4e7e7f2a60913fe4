"""Gymnasium worlds for DeltaWorld; importing this package registers `deltaworld/Shapes-v0` and
`deltaworld/Dream-v0`."""

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

__all__ = [
    "CLASS_NAMES",
    "DREAM_ENV_ID",
    "NUM_CLASSES",
    "SHAPES_ENV_ID",
    "ShapesClips",
    "ShapesConfig",
    "ShapesEnv",
    "ShapesFrame",
    "ShapesWorld",
]
