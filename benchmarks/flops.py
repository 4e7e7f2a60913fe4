"""FLOPs and parameters of DeltaTok, DeltaWorld and DINOWorld at each model size (`SCALES`), counted on the meta
device where a size needs no weights: per imagined frame (`imagined_frame_cost`) and per planning step
(`planning_step_flops`). Every model is built from the project's configs with seeded random weights, and the
seeded random clips here feed the speed sections too: compute does not depend on content."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from envs.goals import FeatureGoalCost, StepCost, TokenGoalCost
from envs.planners import ContextWindow, PlannerConfig, sequence_costs
from tokenizer.data.shapes import ShapesConfig
from tokenizer.model import Tokenizer, TokenizerConfig
from tokenizer.run_config import TokenizerRunConfig
from tokenizer.runtime.config import load_config, to_object
from tokenizer.runtime.devices import autocast
from worldmodel.run_config import WorldModelRunConfig
from worldmodel.world import WorldModel, build_world_model

REPO = Path(__file__).resolve().parents[1]
DT = 1.0 / ShapesConfig.fps  # seconds between frames, as in the Shapes world


@dataclass(frozen=True)
class ModelSource:
    """A run config file and dotted overrides, as a training script gets them."""

    path: str
    overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scale:
    """One model size: the tokenizer, DeltaWorld and DINOWorld configs that go together."""

    tokenizer: ModelSource
    deltaworld: ModelSource
    dinoworld: ModelSource


# DINOv3 ViT-B/16's shape with seeded random weights: counting FLOPs and parameters needs no pretrained weights.
VITB_BACKBONE = (
    "backbone.name=random-init-dinov3",
    "backbone.hidden_size=768",
    "backbone.num_layers=12",
    "backbone.num_heads=12",
    "backbone.intermediate_size=3072",
    "backbone.patch_size=16",
)
VITB_WORLD = "configs/world_model/vitb_dinov3_kinetics.yaml"
# DINOv3 ViT-S/16's shape, random weights as above, and the paper's recipe scaled to its width: a 12-block
# DeltaTok decoder (SwiGLU 2 * 1536 // 3) and 12-block predictors 384 wide (6 heads of 64), on 224 px frames.
VITS_BACKBONE = (
    "backbone.name=random-init-dinov3",
    "backbone.hidden_size=384",
    "backbone.num_layers=12",
    "backbone.num_heads=6",
    "backbone.intermediate_size=1536",
    "backbone.patch_size=16",
    "model.mlp_hidden_size=1024",
)
VITS_WORLD = ("model.predictor.hidden_size=384", "model.predictor.num_heads=6", "data.frame_size=224")
# DINOWorld beside DeltaWorld at one size: the same predictor, RoPE over (time, x, y) on 20 channels each plus
# 4 unrotated (head size 64), trained deterministically, as tiny_dinoworld.yaml makes it at tiny.
DINOWORLD = ("model.kind=dinoworld", "model.predictor.rope_axis_sizes=[20,20,20]", "model.objective.kind=deterministic")
TINY_TOKENIZER = ModelSource("configs/tokenizer/tiny.yaml")
TINY_WORLD = ModelSource("configs/world_model/tiny.yaml")
SCALES = {
    "tiny": Scale(TINY_TOKENIZER, TINY_WORLD, ModelSource("configs/world_model/tiny_dinoworld.yaml")),
    "vitb_512": Scale(
        ModelSource("configs/tokenizer/vitb_dinov3_kinetics.yaml", VITB_BACKBONE),
        ModelSource(VITB_WORLD),
        ModelSource(VITB_WORLD, DINOWORLD),
    ),
    "vits_224": Scale(
        ModelSource("configs/tokenizer/vitb_dinov3_kinetics.yaml", VITS_BACKBONE),
        ModelSource(VITB_WORLD, VITS_WORLD),
        ModelSource(VITB_WORLD, (*VITS_WORLD, *DINOWORLD)),
    ),
}


# --- counting ----------------------------------------------------------------------------------------


def _sdpa_forward_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _sdpa_backward_flops(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode knows SDPA's CUDA kernels but counts the fused CPU kernel as 0 FLOPs; giving it the
# same formulas makes attention count alike on CPU, CUDA and the meta device (where SDPA runs as matmuls).
CPU_ATTENTION_FLOPS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_forward_flops,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_backward_flops,
}


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of everything `fn` runs, as FlopCounterMode counts them: 2 per multiply-add of matmuls,
    convolutions and attention; elementwise work is free."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
        fn()
    return counter.get_total_flops()


def num_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- building models from the project's configs ---------------------------------------------------------


def build_tokenizer(source: ModelSource) -> Tokenizer:
    run = load_config(TokenizerRunConfig, REPO / source.path, source.overrides)
    return Tokenizer.build(TokenizerConfig(backbone=to_object(run.backbone), model=to_object(run.model)))


def load_world_run(source: ModelSource) -> WorldModelRunConfig:
    return to_object(load_config(WorldModelRunConfig, REPO / source.path, source.overrides))


def inference_world(tokenizer: Tokenizer, run: WorldModelRunConfig) -> WorldModel:
    """A world model for imagining only. Its parameters do not require grad: nothing is trained, and
    FlopCounterMode's module tracker fails on trainable parameters used under no_grad."""
    return build_world_model(tokenizer, run.model).eval().requires_grad_(False)


def random_clip(
    batch: int, num_frames: int, size: int, device: torch.device | str, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Seeded uint8 frames (B, T, 3, S, S) at timestamps (B, T) DT apart: compute does not depend on content."""
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randint(0, 256, (batch, num_frames, 3, size, size), dtype=torch.uint8, generator=generator)
    timestamps = (torch.arange(num_frames, dtype=torch.float32) * DT).expand(batch, -1).contiguous()
    return {"frames": frames.to(device), "timestamps": timestamps.to(device)}


# --- what imagining and planning cost -------------------------------------------------------------------


@torch.no_grad()
def imagined_frame_cost(scale: Scale, device: torch.device | str) -> dict:
    """Parameters, and FLOPs to imagine one frame of one sample after `eval.context` real frames.

    DeltaWorld's `step` runs the predictor (sample one token, project it into the history) and the DeltaTok
    decode of that token to all N patch features; the decode is counted alone and subtracted to get the
    predictor's share. DINOWorld's `step` predicts all N patch features against a history of every patch.
    """
    with torch.device(device):
        torch.manual_seed(0)
        tokenizer = build_tokenizer(scale.tokenizer).eval()
        delta_run, dino_run = load_world_run(scale.deltaworld), load_world_run(scale.dinoworld)
        delta, dino = inference_world(tokenizer, delta_run), inference_world(tokenizer, dino_run)
    context, size = delta_run.eval.context, delta_run.data.frame_size
    clip = random_clip(1, context, size, device)
    dream = delta.start(clip["frames"], clip["timestamps"], 1)
    next_time = dream.time + DT
    step = count_flops(lambda: delta.step(dream, next_time))
    token = torch.zeros(1, tokenizer.dim, device=device)
    decode = count_flops(lambda: tokenizer.decode(token, dream.features, dream.grid))
    dino_dream = dino.start(clip["frames"], clip["timestamps"], 1)
    patches = count_flops(lambda: dino.step(dino_dream, next_time))
    return {
        "frame_size": size,
        "patches": dream.features.shape[1],
        "context": context,
        "params": {
            "backbone": num_params(tokenizer.backbone),
            "deltatok": num_params(tokenizer.deltatok),
            "deltaworld": num_params(delta.objective),
            "dinoworld": num_params(dino.objective),
        },
        "flops": {"deltaworld_predictor": step - decode, "deltaworld_decode": step, "dinoworld": patches},
    }


PLANNING_ACTION_DIM = 2  # Shapes-v0's action box, whose bounds the planners search in


def planning_worlds(scale: Scale, device: torch.device | str) -> tuple[Tokenizer, WorldModel, WorldModel, int]:
    """The tokenizer, DeltaWorld (with its readout, for the token cost) and DINOWorld at `scale`, both conditioned
    on 2-D actions as planning needs, built on `device` with seeded random weights; and the frame size."""
    conditioned = (f"model.actions.dim={PLANNING_ACTION_DIM}",)
    with torch.device(device):
        torch.manual_seed(0)
        tokenizer = build_tokenizer(scale.tokenizer).eval()
        delta_run = load_world_run(
            ModelSource(
                scale.deltaworld.path, (*scale.deltaworld.overrides, *conditioned, "model.readout.enabled=true")
            )
        )
        dino_run = load_world_run(ModelSource(scale.dinoworld.path, (*scale.dinoworld.overrides, *conditioned)))
        delta, dino = inference_world(tokenizer, delta_run), inference_world(tokenizer, dino_run)
    return tokenizer, delta, dino, delta_run.data.frame_size


@torch.no_grad()
def planning_step_flops(planner: PlannerConfig, scale: Scale) -> dict:
    """FLOPs of one planning step at `scale`, counted on the meta device: the search (iterations x horizon
    imagined steps of every candidate, each scored by its cost) for DeltaWorld with the token cost, with the
    feature cost, and for DINOWorld; and, apart, what each spends to take in the newest real frame, which
    planning does not change: `observe` as an agent takes it (`observing`: the backbone on it, its tokens, the
    window's new first frame's against black, imagination started from the kept tokens) and
    `observe_restarting` as `WorldModel.start` from every context frame's features would (`restarting`)."""
    device = "meta"
    tokenizer, delta, dino, size = planning_worlds(scale, device)
    clip = random_clip(1, planner.context, size, device)
    newest = clip["frames"][:, -1:]
    goal = tokenizer.features(random_clip(1, 1, size, device, seed=1)["frames"])[0, 0]
    actions = torch.zeros(planner.candidates, planner.horizon, PLANNING_ACTION_DIM, device=device)

    def search(world: WorldModel, cost: StepCost) -> int:
        rows = world.start(clip["frames"], clip["timestamps"], 1).repeat(planner.candidates)
        return planner.iterations * count_flops(lambda: sequence_costs(world, rows, actions, DT, cost, None))

    worlds, meta = (("deltaworld", delta), ("dinoworld", dino)), torch.device(device)
    search_flops = {
        "deltaworld_token": search(delta, TokenGoalCost(delta.readout.summarize(goal, tokenizer.grid(newest)))),
        "deltaworld_feature": search(delta, FeatureGoalCost(goal)),
        "dinoworld": search(dino, FeatureGoalCost(goal)),
    }
    return {
        "search": search_flops,
        "observe": {name: count_flops(observing(world, planner.context, size, meta)) for name, world in worlds},
        "observe_restarting": {
            name: count_flops(restarting(world, planner.context, size, meta)) for name, world in worlds
        },
        "dinoworld_over_deltaworld_token_search": search_flops["dinoworld"] / search_flops["deltaworld_token"],
        "deltaworld_feature_over_token_search": search_flops["deltaworld_feature"] / search_flops["deltaworld_token"],
        "settings": {
            "frame_size": size,
            "candidates": planner.candidates,
            "horizon": planner.horizon,
            "iterations": planner.iterations,
            "context": planner.context,
            "counted_on": device,
        },
    }


def flop_ratios(flops: dict[str, int]) -> dict[str, float]:
    return {
        "predictor_over_decode": flops["deltaworld_predictor"] / flops["deltaworld_decode"],
        "dinoworld_over_deltaworld_predictor": flops["dinoworld"] / flops["deltaworld_predictor"],
        "dinoworld_over_deltaworld_decode": flops["dinoworld"] / flops["deltaworld_decode"],
    }


def observing(world: WorldModel, context: int, size: int, device: torch.device) -> Callable[[], None]:
    """What an MPC agent spends on each new real frame before it plans (`MPCAgent.act`), its context full and
    sliding: the backbone on the newest frame, the DeltaTok encoder on it and on the window's new first frame
    against the black frame (one batch of two), and imagination started from the tokens it kept
    (`ContextWindow`)."""
    clip = random_clip(1, context + 1, size, device)
    window = ContextWindow(world, context, DT)
    with torch.no_grad(), autocast(device):
        for index in range(context):
            window.append(clip["frames"][:, index : index + 1])
        window.dream()
    newest = clip["frames"][:, -1:]

    @torch.no_grad()
    def observe() -> None:
        with autocast(device):
            window.append(newest)
            window.dream()

    return observe


def restarting(world: WorldModel, context: int, size: int, device: torch.device) -> Callable[[], None]:
    """Taking in the newest frame without kept tokens, beside `observing`: the backbone on it, then
    `WorldModel.start` from every context frame's features (the earlier frames' kept), which takes every
    frame's tokens again."""
    clip = random_clip(1, context, size, device)
    with torch.no_grad(), autocast(device):
        kept = world.tokenizer.features(clip["frames"][:, :-1])

    @torch.no_grad()
    def observe() -> None:
        with autocast(device):
            newest = world.tokenizer.features(clip["frames"][:, -1:])
            world.start(clip["frames"], clip["timestamps"], 1, torch.cat((kept, newest), dim=1))

    return observe
