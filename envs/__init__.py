"""Gymnasium worlds for DeltaWorld; importing this package registers `deltaworld/Shapes-v0`."""

from gymnasium.envs.registration import register, registry

from envs.shapes import CLASS_NAMES, NUM_CLASSES, ShapesClips, ShapesConfig, ShapesEnv, ShapesFrame, ShapesWorld

SHAPES_ENV_ID = "deltaworld/Shapes-v0"

# The registry is process-global and this module may be re-imported (reloads, test collection).
if SHAPES_ENV_ID not in registry:
    register(id=SHAPES_ENV_ID, entry_point="envs.shapes:ShapesEnv", max_episode_steps=100)

__all__ = ["CLASS_NAMES", "NUM_CLASSES", "SHAPES_ENV_ID", "ShapesClips", "ShapesConfig", "ShapesEnv", "ShapesFrame", "ShapesWorld"]
