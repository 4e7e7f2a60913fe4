"""The function forms of `WorldModel.build` and `WorldModel.from_pretrained`, for code that prefers functions."""

from __future__ import annotations

from worldmodel.world import WorldModel

build_world_model = WorldModel.build
load_world_model = WorldModel.from_pretrained
