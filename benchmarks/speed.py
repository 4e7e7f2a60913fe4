"""How fast the world models imagine and plan: milliseconds per imagined frame and per CEM planning step at tiny,
set up as `make plan-bench` sets them up (`imagination_ms`, `planning`), and seconds per planning step and per env
step at a size where a planning step is FLOP-bound, beside the FLOPs `benchmarks.flops` counts (`scale_planning`)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from benchmarks.flops import (
    DT,
    REPO,
    SCALES,
    TINY_TOKENIZER,
    ModelSource,
    build_tokenizer,
    inference_world,
    load_world_run,
    observing,
    planning_step_flops,
    planning_worlds,
    random_clip,
    restarting,
)
from benchmarks.plan_config import PlanBenchConfig
from benchmarks.timing import Settings, median_seconds, timings
from envs.goals import StepCost, goal_cost
from envs.planners import Planner, PlannerConfig
from envs.shapes import ShapesEnv
from tokenizer.runtime.config import load_config, to_object
from tokenizer.runtime.devices import autocast
from worldmodel.run_config import WorldModelRunConfig
from worldmodel.world import WorldModel

PLAN_BENCH_CONFIG = "configs/plan_bench/shapes.yaml"
SEARCHES = ("deltaworld_token", "deltaworld_feature", "dinoworld")  # as planning_step_flops names them


@torch.no_grad()
def imagination_ms(world: WorldModel, run: WorldModelRunConfig, settings: Settings, device: torch.device) -> float:
    """Milliseconds per imagined frame as rollout.py imagines: one clip, K = model.num_samples futures, each
    `step` advancing all K by a frame and growing their histories by it (cached keys/values reused)."""
    clip = random_clip(1, run.eval.context, run.data.frame_size, device)
    generator = torch.Generator(device).manual_seed(0)
    with autocast(device):
        dream = world.start(clip["frames"], clip["timestamps"], run.model.num_samples)

    def rollout() -> None:
        state, at = dream, dream.time
        with autocast(device):
            for _ in range(settings.horizon):
                at = at + DT
                _, _, state = world.step(state, at, generator=generator)

    return 1000 * median_seconds(rollout, settings, device) / settings.horizon


def goal_image(size: int) -> np.ndarray:
    return random_clip(1, 1, size, "cpu", seed=1)["frames"][0, 0].permute(1, 2, 0).numpy()


@torch.no_grad()
def planning_search(
    world: WorldModel, planner: Planner, context: int, size: int, cost: StepCost, device: torch.device
) -> Callable[[], None]:
    """One `Planner.plan` call (CEM: iterations x horizon batched steps over every candidate) from `context`
    real frames of `size` px toward a goal, on `device` where the world model is (bf16 autocast on CUDA)."""
    clip = random_clip(1, context, size, device)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad(), autocast(device):
        dream = world.start(clip["frames"], clip["timestamps"], 1)

    @torch.no_grad()
    def search() -> None:
        with autocast(device):
            planner.plan(world, dream, DT, cost, generator)

    return search


def planning_ms(
    world: WorldModel, planner: Planner, context: int, size: int, cost: StepCost, settings: Settings
) -> float:
    """Milliseconds per planning step (`planning_search`) on the CPU, where `make plan-bench` plans at tiny."""
    cpu = torch.device("cpu")
    return 1000 * median_seconds(planning_search(world, planner, context, size, cost, cpu), settings, cpu)


def plan_bench_config(settings: Settings) -> PlanBenchConfig:
    """configs/plan_bench/shapes.yaml with the settings' planner overrides: the planner `make plan-bench` uses."""
    return to_object(load_config(PlanBenchConfig, REPO / PLAN_BENCH_CONFIG, settings.planner_overrides))


def planning(settings: Settings) -> dict:
    """CEM planning latency in DeltaWorld and DINOWorld, set up as `make plan-bench` sets them up:
    configs/plan_bench/shapes.yaml's planner and action-conditioned world models, Shapes-v0's action box."""
    cfg = plan_bench_config(settings)
    action_space = ShapesEnv().action_space
    planner = Planner(cfg.planner, action_space.low, action_space.high)
    torch.manual_seed(0)
    tokenizer = build_tokenizer(TINY_TOKENIZER).eval()
    results = {}
    for name in ("deltaworld", "dinoworld"):
        section = getattr(cfg, name)
        run = load_world_run(ModelSource(section.config, tuple(section.overrides)))
        world, size = inference_world(tokenizer, run), run.data.frame_size
        # DeltaWorld with its readout plans on tokens; the feature cost decodes every imagined step.
        kinds = ("token", "features") if world.readout is not None else ("features",)
        for kind in kinds:
            key = f"{name}_tiny" if kind == kinds[0] else f"{name}_{kind}_tiny"
            results[key] = planning_ms(
                world, planner, cfg.planner.context, size, goal_cost(world, goal_image(size), kind), settings
            )
    return {"ms_per_planning_step": results, "planner": vars(cfg.planner), "device": "cpu"}


def fields_of(config: object, *names: str) -> dict:
    return {name: getattr(config, name) for name in names}


def ratios(values: dict[str, float]) -> dict[str, float]:
    """How many times DINOWorld's value, and the feature cost's, is the token cost's (and DINOWorld's the feature
    cost's)."""
    return {
        "dinoworld_over_deltaworld_token": values["dinoworld"] / values["deltaworld_token"],
        "dinoworld_over_deltaworld_feature": values["dinoworld"] / values["deltaworld_feature"],
        "deltaworld_feature_over_token": values["deltaworld_feature"] / values["deltaworld_token"],
    }


def scale_planning(scale_name: str, planner_config: PlannerConfig, settings: Settings, device: torch.device) -> dict:
    """Seconds per CEM planning step at SCALES[scale_name] on `device`, in one run: DeltaWorld with the token cost
    (the readout, nothing decoded), with the feature cost (every imagined step decoded to all N patches), and
    DINOWorld (every patch predicted), each through `Planner.plan` from `planner_config.context` random frames
    toward a random goal frame; set beside their FLOPs (`planning_step_flops`) and what taking in a new real
    frame costs each, with the context's tokens kept (`observing`) and, for comparison, without (`restarting`).
    Seeded random weights: no backbone or checkpoint is downloaded.

    A CEM iteration imagines the same candidates x horizon steps from the same start whatever actions it
    samples, so one iteration per call is timed and a planning step is `iterations` of them: at ViT-S/224 the
    feature cost and DINOWorld take a minute or more per iteration on a 2-core CPU. The token cost's whole step
    is timed too, as a check of that product.
    """
    action_space = ShapesEnv().action_space
    iteration, warm, whole = (
        Planner(replace(planner_config, **changes), action_space.low, action_space.high)
        for changes in ({"iterations": 1}, {"iterations": 1, "horizon": 1}, {})
    )
    tokenizer, delta, dino, size = planning_worlds(SCALES[scale_name], device)
    context = planner_config.context
    searches = {
        "deltaworld_token": (delta, "token"),
        "deltaworld_feature": (delta, "features"),
        "dinoworld": (dino, "features"),
    }
    repeats = {
        name: settings.scale_repeats if name == "deltaworld_token" else settings.scale_repeats_dense
        for name in SEARCHES
    }
    per_iteration: dict[str, list[float]] = {}
    costs: dict[str, StepCost] = {}
    for name, (world, kind) in searches.items():
        with torch.no_grad(), autocast(device):
            costs[name] = goal_cost(world, goal_image(size), kind)
        for _ in range(settings.scale_warmup):  # every operator at this width, for a fraction of a call's time
            planning_search(world, warm, context, size, costs[name], device)()
        search = planning_search(world, iteration, context, size, costs[name], device)
        per_iteration[name] = timings(search, replace(settings, warmup=0, repeats=repeats[name]), device)
        print(f"[bench] {name}: {statistics.median(per_iteration[name]):.3f} s per CEM iteration", flush=True)
    seconds = {name: planner_config.iterations * statistics.median(times) for name, times in per_iteration.items()}
    whole_search = planning_search(delta, whole, context, size, costs["deltaworld_token"], device)
    whole_token = median_seconds(whole_search, replace(settings, warmup=0, repeats=repeats["deltaworld_token"]), device)
    observe_settings = replace(settings, warmup=settings.scale_warmup, repeats=settings.scale_repeats)
    observe, observe_restarting = (
        {
            name: median_seconds(taking_in(world, context, size, device), observe_settings, device)
            for name, world in (("deltaworld", delta), ("dinoworld", dino))
        }
        for taking_in in (observing, restarting)
    )
    env_step = {name: seconds[name] + observe[name.split("_")[0]] for name in SEARCHES}
    flops = planning_step_flops(planner_config, SCALES[scale_name])
    grid = tokenizer.backbone.grid(size, size)
    return {
        "seconds_per_planning_step": seconds,
        "time_ratios": ratios(seconds),
        "flops_per_planning_step": flops["search"],
        "flop_ratios": ratios(flops["search"]),
        "achieved_gflops": {name: flops["search"][name] / seconds[name] / 1e9 for name in SEARCHES},
        "seconds_per_iteration": per_iteration,
        "deltaworld_token_whole_step": {
            "seconds": whole_token,
            "over_iterations_times_one": whole_token / seconds["deltaworld_token"],
        },
        # An env step is taking in the new frame (`observing`: its tokens alone, the context's kept), then the
        # search; the first does not depend on the cost. `_restarting`: taking it in by `WorldModel.start` from
        # every context frame (`restarting`), what the kept tokens save.
        "seconds_to_observe": observe,
        "flops_to_observe": flops["observe"],
        "seconds_to_observe_restarting": observe_restarting,
        "flops_to_observe_restarting": flops["observe_restarting"],
        "seconds_per_env_step": env_step,
        "env_step_time_ratios": ratios(env_step),
        "settings": {
            "scale": scale_name,
            "frame_size": size,
            "patches": grid[0] * grid[1],
            "width": tokenizer.dim,
            "backbone": fields_of(
                tokenizer.config.backbone, "num_layers", "num_heads", "intermediate_size", "patch_size"
            ),
            "deltatok": fields_of(tokenizer.config.model, "num_layers", "mlp_hidden_size"),
            "predictor": fields_of(delta.config.predictor, "hidden_size", "num_layers", "num_heads"),
            "readout": {"grid": delta.config.readout.grid}
            | fields_of(delta.config.readout.predictor, "hidden_size", "num_layers", "num_heads"),
            "planner": vars(planner_config),
            "timed": "one CEM iteration per call, median; seconds per planning step = iterations x that median",
            "warmup_one_step_searches": settings.scale_warmup,
            "repeats": repeats,
            "device": str(device),
            "dtype": "bfloat16 autocast" if device.type == "cuda" else "float32",
            "threads": torch.get_num_threads(),
            "weights": "seeded random",
        },
    }
