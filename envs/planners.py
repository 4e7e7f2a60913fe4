"""Model-predictive control in a world model's imagination: CEM and MPPI over action sequences.

Every candidate action sequence is one row of a single world-model rollout, so
an iteration costs `horizon` batched `WorldModel.imagine` calls whatever the
number of candidates. With DeltaWorld a row's history grows by one token per
imagined frame; the patch-level DINOWorld grows by N. The cost of a row is the
mean over the imagined steps of a step cost (`envs.goals`), or the last step's
alone (`cost_steps="last"`, how DINO-WM scores a plan): by default the token
cost when the model has a readout (no imagined frame is ever decoded), else the
feature distance to the goal frame (each step decoded). An agent's context
(`ContextWindow`) keeps each real frame's tokens between plans, so taking in a
frame runs the DeltaTok encoder on it alone (and on the window's new first frame).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from envs.goals import StepCost, as_step_cost, check_cost_blur, check_cost_kind, goal_cost
from envs.wrappers import frame_tensor, model_device
from tokenizer.runtime.errors import ConfigError, InputError
from worldmodel.world import Dream, WorldModel

CostArg = StepCost | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
COST_STEPS = ("all", "last")


@dataclass
class PlannerConfig:
    kind: str = "cem"  # cem | mppi
    horizon: int = 5  # imagined steps per candidate sequence
    candidates: int = 64  # action sequences per iteration, all rows of one rollout
    iterations: int = 3  # refinements of the sampling distribution per env step
    elites: int = 8  # cem: best candidates the next distribution is fitted to
    init_std: float = 0.5  # std of the first iteration's Gaussian, in action units
    min_std: float = 0.05  # cem: floor that keeps later iterations exploring
    temperature: float = 0.1  # mppi: softmax temperature on costs rescaled to [0, 1]
    # all: a candidate's cost is the mean step cost over its imagined steps; last: the final step's alone (DINO-WM's
    # objective: end at the goal), which also scores each candidate once instead of `horizon` times.
    cost_steps: str = "all"
    # A goal cost's maps smoothed by a Gaussian of this std in backbone patches before they are compared, so a near
    # miss costs less than a far one (envs.goals); 0: compared as they are.
    cost_blur: float = 0.0
    context: int = 4  # real frames the imagination starts from
    # Planned steps applied before planning again (`MPCAgent.plan_steps`); null = the whole horizon, as DINO-WM's,
    # PLDM's and LeWM's evaluations apply (their horizon is 5). `MPCAgent.act` always applies one.
    receding_horizon: int | None = None

    def validate(self) -> None:
        if self.kind not in ("cem", "mppi"):
            raise ConfigError(f"planner.kind {self.kind!r} is not one of cem, mppi")
        if self.cost_steps not in COST_STEPS:
            raise ConfigError(f"planner.cost_steps {self.cost_steps!r} is not one of {', '.join(COST_STEPS)}")
        check_cost_blur(self.cost_blur, "planner.cost_blur")
        for name in ("horizon", "candidates", "iterations", "elites", "context"):
            if getattr(self, name) < 1:
                raise ConfigError(f"planner.{name} must be at least 1, got {getattr(self, name)}")
        if self.receding_horizon is not None and not 1 <= self.receding_horizon <= self.horizon:
            raise ConfigError(
                f"planner.receding_horizon must be 1 to planner.horizon ({self.horizon}), or null for the whole "
                f"horizon, got {self.receding_horizon}"
            )
        if self.elites > self.candidates:
            raise ConfigError(f"planner.elites ({self.elites}) cannot exceed planner.candidates ({self.candidates})")
        if not (self.init_std > 0 and self.min_std >= 0 and self.temperature > 0):
            raise ConfigError(
                "planner.init_std and planner.temperature must be positive and planner.min_std non-negative"
            )

    @property
    def steps_applied(self) -> int:
        """Planned steps applied before planning again."""
        return self.horizon if self.receding_horizon is None else self.receding_horizon


# Named search budgets: (candidates, iterations, elites). `peers` is the CEM that DINO-WM, PLDM and LeWM are
# scored with (stable-worldmodel's solver preset: 300 samples, 30 iterations, the best 30 refit).
BUDGETS = {"peers": (300, 30, 30)}


def with_budget(config: PlannerConfig, spec: str) -> PlannerConfig:
    """`config` with the search budget `spec`: a name in `BUDGETS` or "CANDIDATESxITERATIONS[/ELITES]" (elites
    left out: the config's own)."""
    if spec in BUDGETS:
        candidates, iterations, elites = BUDGETS[spec]
    else:
        sizes, _, elites_text = spec.partition("/")
        candidates_text, _, iterations_text = sizes.partition("x")
        try:
            candidates, iterations = int(candidates_text), int(iterations_text)
            elites = int(elites_text) if elites_text else config.elites
        except ValueError:
            raise ConfigError(
                f"search budget {spec!r} is not one of {', '.join(BUDGETS)} nor CANDIDATESxITERATIONS[/ELITES] "
                "(e.g. 300x10/30)"
            ) from None
    budgeted = replace(config, candidates=candidates, iterations=iterations, elites=elites)
    budgeted.validate()
    return budgeted


def budget_name(config: PlannerConfig) -> str:
    """The budget `with_budget` reads back: "CANDIDATESxITERATIONS/ELITES"."""
    return f"{config.candidates}x{config.iterations}/{config.elites}"


@torch.no_grad()
def sequence_costs(
    world: WorldModel,
    dream: Dream,
    actions: torch.Tensor,
    dt: float,
    cost: CostArg,
    generator: torch.Generator | None,
    last_only: bool = False,
) -> torch.Tensor:
    """Imagine every candidate in one batch: dream of C rows, actions (C, h, A) -> mean step cost (C,),
    or with `last_only` the cost of the final imagined step alone (earlier steps are imagined, not scored)."""
    cost = as_step_cost(cost)
    total = torch.zeros(actions.shape[0], device=actions.device)
    time = dream.time
    scored = range(actions.shape[1] - 1, actions.shape[1]) if last_only else range(actions.shape[1])
    for step in range(actions.shape[1]):
        time = time + dt
        tokens, dream = world.imagine(dream, time, actions[:, step], generator)
        if step in scored:
            if cost.needs_features:
                dream = world.decoded(dream)
            total += cost(world, dream, tokens).float()
    return total / len(scored)


class Planner:
    """CEM or MPPI over action sequences (h, A) in a Box [low, high]^A."""

    def __init__(self, config: PlannerConfig, low: np.ndarray, high: np.ndarray):
        config.validate()
        self.config = config
        self.low = torch.as_tensor(np.asarray(low, dtype=np.float32))
        self.high = torch.as_tensor(np.asarray(high, dtype=np.float32))
        if self.low.ndim != 1 or self.low.shape != self.high.shape or not bool((self.high > self.low).all()):
            raise ConfigError("planners need a bounded 1-D Box action space with high > low")

    def plan(
        self,
        world: WorldModel,
        dream: Dream,
        dt: float,
        cost: CostArg,
        generator: torch.Generator,
        init: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Refine a Gaussian over sequences for `iterations` rounds from `dream` (one row) -> best mean sequence (h, A).

        `init` (h, A) is the first mean (the previous plan shifted by one step); zeros otherwise. The search runs
        on the world model's device, and `generator` must be on it: the model draws its samples' noise with it.
        """
        cfg = self.config
        device = model_device(world)
        shape = (cfg.horizon, self.low.shape[0])
        low, high = self.low.to(device), self.high.to(device)
        mean = init.to(device, copy=True) if init is not None else torch.zeros(shape, device=device)
        std = torch.full(shape, cfg.init_std, device=device)
        rows = dream.repeat(cfg.candidates)
        for _ in range(cfg.iterations):
            noise = torch.randn((cfg.candidates, *shape), generator=generator, device=device)
            noise[0] = 0  # the current mean always competes
            candidates = torch.maximum(torch.minimum(mean + std * noise, high), low)
            costs = sequence_costs(world, rows, candidates, dt, cost, generator, last_only=cfg.cost_steps == "last")
            if cfg.kind == "cem":
                elite = candidates[costs.topk(cfg.elites, largest=False).indices]
                mean, std = elite.mean(0), elite.std(0, unbiased=False).clamp_min(cfg.min_std)
            else:
                spread = (costs.max() - costs.min()).clamp_min(1e-12)
                weights = torch.softmax(-(costs - costs.min()) / spread / cfg.temperature, dim=0)
                mean = torch.einsum("c,cha->ha", weights, candidates)
        return mean


@dataclass
class ContextFrame:
    """A real frame in an agent's context: its backbone features (1, N, D) and, once taken, its tokens
    (1, *token_shape) against the frame before it and against the black frame (its token as the context's first)."""

    features: torch.Tensor
    token: torch.Tensor | None = None
    first_token: torch.Tensor | None = None


class ContextWindow:
    """The newest `length` real frames an agent plans from, `dt` seconds apart, with each frame's tokens kept
    between planning steps.

    `dream()` starts imagination from the window as `WorldModel.start` starts it from the same frames: timestamps
    rebased to 0, dt, ..., the first frame's token taken against the black frame and every later one against the
    frame before it. Tokens are taken once, when a dream first needs them, all in one `WorldModel.frame_tokens`
    batch: so the DeltaTok encoder runs only on the frames new since the last dream, and on the window's first
    frame against black when it becomes first. The predictor's history is projected anew from the kept tokens each
    time (one token per frame for DeltaWorld): its keys are rotated by the rebased timestamps, which move as the
    window slides. The readout starts from the newest frame, new every time.
    """

    def __init__(self, world: WorldModel, length: int, dt: float):
        self.world, self.dt = world, dt
        self.frames: deque[ContextFrame] = deque(maxlen=length)
        self.frame_size: tuple[int, int] = (0, 0)
        self.grid: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.frames)

    def clear(self) -> None:
        self.frames.clear()

    @torch.no_grad()
    def append(self, frame: torch.Tensor) -> None:
        """The newest frame (1, 1, 3, H, W) uint8, on the model's device, `dt` after the previous one."""
        size = (frame.shape[-2], frame.shape[-1])
        if self.frames and size != self.frame_size:
            raise InputError(f"a context holds frames of one size, {self.frame_size}; got {size}")
        self.frame_size, self.grid = size, self.world.tokenizer.grid(frame)
        self.frames.append(ContextFrame(self.world.tokenizer.features(frame)[:, 0]))

    @torch.no_grad()
    def dream(self) -> Dream:
        """A dream of one row from the frames in the window."""
        if not self.frames:
            raise ConfigError("the context holds no frame: append one before dreaming")
        frames = list(self.frames)
        missing = [i for i, frame in enumerate(frames) if (frame.token if i else frame.first_token) is None]
        if missing:
            features = torch.cat([frames[i].features for i in missing])
            black = self.world.tokenizer.black_features(1, *self.frame_size, features.device) if 0 in missing else None
            prev = torch.cat([frames[i - 1].features if i else black for i in missing])
            for i, token in zip(missing, self.world.frame_tokens(features, prev, self.frame_size).split(1)):
                if i:
                    frames[i].token = token
                else:
                    frames[0].first_token = token
        tokens = torch.cat([frames[0].first_token, *(frame.token for frame in frames[1:])])[None]
        newest = frames[-1].features
        timestamps = torch.arange(len(frames), dtype=torch.float32, device=newest.device)[None] * self.dt
        return self.world.start_from_tokens(tokens, newest, timestamps, self.grid, 1)


class MPCAgent:
    """Receding-horizon control toward a goal image: `act(frame)` plans from the last `context` frames, applies the
    first action.

    Frames are (H, W, 3) uint8 at a fixed interval `dt` seconds, held in a `ContextWindow` (`frames`): each
    frame's backbone features are taken when it is observed and its delta tokens when a plan first needs them,
    then kept, so a plan encodes only the frames new to the context (and the first one against the black frame
    once it becomes first), with the plans of restarting from every context frame (`WorldModel.start`). The plan
    is kept and shifted by the steps applied to start the next round's search. To apply several
    planned steps before planning again, `observe(frame)` each frame and call
    `plan_steps(count)` when a new plan is due. A goal image's cost
    is chosen by `cost_kind` ("auto": the token cost when the model has a readout,
    else "features"; see `envs.goals.goal_cost`); `cost=` sets any step cost instead.
    Planning runs on the world model's device as it is when the agent is made; `device=` moves the model there first.
    """

    def __init__(
        self,
        world: WorldModel,
        planner: Planner,
        dt: float,
        cost: CostArg | None = None,
        seed: int = 0,
        cost_kind: str = "auto",
        device: torch.device | str | None = None,
    ):
        if not world.action_conditioned or not world.config.actions.dim:
            raise ConfigError("planning needs a world model conditioned on continuous actions (model.actions.dim > 0)")
        if world.config.actions.dim != planner.low.shape[0]:
            raise ConfigError(
                f"the world model takes {world.config.actions.dim}-D actions, the planner's action space has "
                f"{planner.low.shape[0]}"
            )
        self.world, self.planner, self.dt = (world if device is None else world.to(device)).eval(), planner, dt
        self.device = model_device(self.world)
        self.cost = cost
        self.cost_kind = check_cost_kind(cost_kind)
        # One stream on the model's device for the candidates' noise and the model's own sampling noise; on the
        # CPU it is the stream torch.Generator() gives, so CPU plans are those of a CPU-only agent.
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.frames = ContextWindow(self.world, planner.config.context, dt)
        self._plan: torch.Tensor | None = None

    def reset(self, goal_frame: np.ndarray | None = None) -> None:
        """Forget the past frames and plan; a goal image (H, W, 3) sets the cost to reaching it (`cost_kind`,
        smoothed by the planner's `cost_blur`)."""
        self.frames.clear()
        self._plan = None
        if goal_frame is not None:
            self.cost = goal_cost(self.world, goal_frame, self.cost_kind, self.planner.config.cost_blur)

    @torch.no_grad()
    def observe(self, frame: np.ndarray) -> None:
        """Add the newest frame (H, W, 3) uint8, `dt` after the previous one, to the context without planning."""
        self.frames.append(frame_tensor(frame, device=self.device))

    @torch.no_grad()
    def plan_steps(self, count: int = 1) -> np.ndarray:
        """Plan from the newest `context` frames observed -> the first `count` planned actions (count, A) float32,
        to apply in turn.

        The rest of the plan, shifted by `count` (its last action repeated), starts the next search.
        """
        if self.cost is None:
            raise ConfigError("the agent has no cost: call reset(goal_frame) or pass cost=")
        if not self.frames:
            raise ConfigError("the agent has seen no frame: observe(frame) before planning")
        if not 1 <= count <= self.planner.config.horizon:
            raise ConfigError(
                f"can apply 1 to planner.horizon ({self.planner.config.horizon}) planned steps, not {count}"
            )
        dream = self.frames.dream()
        init = None
        if self._plan is not None and count < len(self._plan):
            init = torch.cat((self._plan[count:], self._plan[-1:].expand(count, -1)))
        self._plan = self.planner.plan(self.world, dream, self.dt, self.cost, self.generator, init)
        return self._plan[:count].cpu().numpy().astype(np.float32)

    def act(self, frame: np.ndarray) -> np.ndarray:
        """The newest frame (H, W, 3) uint8 -> the action (A,) float32 to apply now."""
        self.observe(frame)
        return self.plan_steps(1)[0]
