"""Objectives for the next-token predictor, chosen by `objective.kind`."""

from tokenizer.runtime.errors import ConfigError
from worldmodel.objectives.base import ActionSpace, Objective, ObjectiveConfig, regression_loss
from worldmodel.objectives.bom import BestOfMany
from worldmodel.objectives.deterministic import Deterministic
from worldmodel.objectives.diffusion import Diffusion
from worldmodel.objectives.flow import FlowMatching
from worldmodel.predictor import Predictor

OBJECTIVES = {"bom": BestOfMany, "flow": FlowMatching, "diffusion": Diffusion, "deterministic": Deterministic}


def build_objective(cfg: ObjectiveConfig, predictor: Predictor, actions: ActionSpace) -> Objective:
    if cfg.kind not in OBJECTIVES:
        raise ConfigError(f"objective.kind {cfg.kind!r} is not one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[cfg.kind](cfg, predictor, actions)


__all__ = ["ActionSpace", "Objective", "ObjectiveConfig", "build_objective", "regression_loss", "OBJECTIVES"]
