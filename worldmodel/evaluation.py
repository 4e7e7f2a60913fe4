"""The rollout evaluation: how well imagined futures segment and give depth, against two bounds.

For each clip, `context` true frames are followed by imagined ones; every target
frame is scored by the task heads (mIoU, depth RMSE) and by the SmoothL1 feature
loss to its true features. Methods, per horizon h (frames ahead):

  present     heads on the true features of the target frame (upper bound)
  copy_last   the last context frame's features kept (lower bound)
  tokenizer   tokens encoded from the true frames, decoded autoregressively (Tokenizer.rollout)
  world_best  the best of K imagined samples by feature loss at step h, the last step of that horizon
  world_mean  the mean of the K imagined features
  world_samples  the K samples judged as a forecast distribution by the energy score (below)

Best-of-K needs an oracle and mean-of-K hides the spread, so the K samples are also
scored as a distribution by the energy score, a proper scoring rule (lower is better):

  ES = mean_k d(x_k, y) - 1/2 mean_{k != l} d(x_k, x_l),   d(a, b) = ||a - b||_2 / sqrt(N * D)

(the fair estimator over distinct pairs; d is the RMS feature distance). Copy-last
is K identical samples, so its score is its distance to the truth: a model beats it
only if its samples are nearer the truth on average or spread where the truth does.
Both terms are reported beside the score (`distance_to_truth`, `sample_spread`):
they say whether a model wins by accuracy or by spread. Imagined frames are decoded
by the tokenizer, so even samples of the true future's distribution keep about the
tokenizer's own error from the truth: spread below distance is expected here.

The first world model's rows carry these names; every other model's carry its name as a suffix
(`world_best_flow`), so each series appears once.

Intervals. Every figure of a method at a horizon gets a 95 % percentile bootstrap interval over
clips (`<metric>_ci95`): clips are resampled with replacement (1,000 resamples, a fixed seed), the
figure recomputed from the resampled clips' sufficient statistics (per-class intersections and
unions for mIoU, squared-error sums for RMSE, sums for means), and the 2.5th and 97.5th percentiles
taken. One resample serves every method of a horizon, so gap-closed intervals pair each method with
its bounds on the same clips. Below 20 clips a percentile bootstrap covers too little, so no
interval is given (null) and the report says so.

Token usage (`tokenizer.usage`) is measured on each clip's horizon-1 pair (the last
context frame and the next one), with the token of another clip in the batch as
the shuffled token.

Protocol. By default one rollout of max(h) steps per clip serves every horizon:
horizon h is step h of it, scored against frame context + h of a clip of
context + max(h) frames. Datasets that label only a clip's last frame
(Cityscapes, KITTI) use protocol "per_horizon": each horizon gets its own rollout
from the `context` frames that end h frames before the clip's last frame.
Rectangular frames are cut into two squares as the readers prescribe
(`tokenizer.data.squares`); each square is scored on its own label half.

`score_heads` scores task heads alone, on true features of every frame of a dataset (train_heads.py's metrics).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset

from tokenizer.data.squares import SquareSplit, split_into_squares, split_labelled
from tokenizer.model import Tokenizer
from tokenizer.released import DEPTH, RGB, SEGMENTATION
from tokenizer.runtime.devices import autocast
from tokenizer.runtime.errors import ConfigError, InputError
from tokenizer.usage import token_usage, usage_losses
from worldmodel.heads import LABEL_KINDS, TaskHeads
from worldmodel.metrics import DepthRMSE, MeanIoU, mean_iou
from worldmodel.rgb_head import pixel_target
from worldmodel.training import feature_loss
from worldmodel.world import WorldModel

BOUNDS = ("present", "copy_last", "tokenizer")
WORLD_BEST, WORLD_MEAN, WORLD_SAMPLES = "world_best", "world_mean", "world_samples"
ENERGY, TO_TRUTH, SPREAD = "energy_score", "distance_to_truth", "sample_spread"
ENERGY_TERMS = (ENERGY, TO_TRUTH, SPREAD)
PROTOCOLS = ("one_rollout", "per_horizon")
# Percentile bootstrap over clips: below MIN_INTERVAL_CLIPS its intervals cover well under 95 %, so none is given.
INTERVAL_LEVEL, INTERVAL_RESAMPLES, INTERVAL_SEED, MIN_INTERVAL_CLIPS = 0.95, 1000, 0, 20
CI = "_ci95"


def rms_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """RMS distance between feature maps: a (..., N, D), b broadcastable -> (...)."""
    return (a.float() - b.float()).pow(2).mean(dim=(-2, -1)).sqrt()


def energy_terms(samples: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """The energy score of K samples (B, K, N, D) against the truth (B, N, D) and its two terms, each (B,).

    `distance_to_truth` is the samples' mean distance to the truth, `sample_spread` the mean distance
    between distinct samples (0 for K = 1 or identical samples), and `energy_score` the first minus half
    the second (lower is better); all with the RMS feature distance.
    """
    to_truth = rms_distance(samples, target.unsqueeze(1)).mean(dim=1)
    k = samples.shape[1]
    between = torch.zeros_like(to_truth)
    if k > 1:
        flat = samples.flatten(2).float()
        between = torch.cdist(flat, flat).sum(dim=(1, 2)) / (k * (k - 1)) / math.sqrt(flat.shape[-1])
    return {ENERGY: to_truth - 0.5 * between, TO_TRUTH: to_truth, SPREAD: between}


def energy_score(samples: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Energy score of K samples (B, K, N, D) against the truth (B, N, D) -> (B,); lower is better."""
    return energy_terms(samples, target)[ENERGY]


@dataclass
class RolloutEvalConfig:
    """How imagined futures are made and scored: context, horizons, samples, protocol, pictures."""

    context: int = 4  # true frames the world model sees before the imagined ones
    horizons: list[int] = field(default_factory=lambda: [1])  # frames ahead that are scored
    # K imagined futures per clip; null = the first world model's own num_samples (the paper's 20)
    num_samples: int | None = None
    seed: int = 0  # seeds the sampling of imagined futures
    protocol: str = "one_rollout"  # one_rollout | per_horizon (see the module docstring)
    num_pictures: int = 2  # clips whose rollouts are kept for pictures
    picture_samples: int = 3  # imagined samples shown side by side per picture

    def validate(self) -> None:
        if self.context < 1:
            raise ConfigError(f"eval.context must be at least 1 frame, got {self.context}")
        if not self.horizons or min(self.horizons) < 1:
            raise ConfigError(f"eval.horizons: every horizon must be at least 1 frame ahead, got {list(self.horizons)}")
        if self.num_samples is not None and self.num_samples < 1:
            raise ConfigError(
                f"eval.num_samples must be at least 1, or null for the world model's own, got {self.num_samples}"
            )
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"eval.protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")

    @property
    def clip_frames(self) -> int:
        """Frames each clip must hold: the context and the longest horizon."""
        return self.context + max(self.horizons)


def check_same_backbone(tokenizer: Tokenizer, world: WorldModel, name: str) -> None:
    """Targets come from `tokenizer`'s backbone; a world model that imagines another backbone's features cannot be
    scored on them."""
    ours, theirs = tokenizer.backbone.state_dict(), world.tokenizer.backbone.state_dict()
    same = ours.keys() == theirs.keys() and all(
        ours[k].shape == theirs[k].shape and torch.equal(ours[k].cpu(), theirs[k].cpu()) for k in ours
    )
    if not same:
        raise InputError(
            f"world model {name} was trained on another backbone than the tokenizer given; pass the tokenizer it was "
            "trained with"
        )


class ClipStats:
    """Sufficient statistics of a figure kept per clip, for intervals over clips: rows (M, W) of any batch, each
    added to the clip it belongs to (the two squares of a wide frame belong to one clip)."""

    def __init__(self) -> None:
        self.parts: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, clips: torch.Tensor, rows: torch.Tensor) -> None:
        """clips (M,) clip indices, rows (M, W)."""
        self.parts.append((clips.cpu(), rows.detach().double().cpu()))

    def per_clip(self, num_clips: int) -> torch.Tensor | None:
        """(num_clips, W) float64, or None when nothing was added."""
        if not self.parts:
            return None
        clips, rows = (torch.cat(part) for part in zip(*self.parts))
        return torch.zeros(num_clips, rows.shape[1], dtype=torch.float64).index_add_(0, clips, rows)


class MethodScores:
    """Streaming mIoU, depth RMSE and mean feature loss of one method at one horizon, and each clip's sufficient
    statistics of them (`ClipStats`) for intervals."""

    def __init__(self, num_classes: int | None, depth: bool):
        self.miou = MeanIoU(num_classes) if num_classes else None
        self.rmse = DepthRMSE() if depth else None
        self.loss_sum, self.loss_count = 0.0, 0
        self.clip_stats = {"miou": ClipStats(), "rmse": ClipStats(), "feature_loss": ClipStats()}

    def update(
        self,
        maps: dict[str, torch.Tensor],
        labels: dict[str, torch.Tensor],
        loss: torch.Tensor | None,
        clips: torch.Tensor | None = None,
    ) -> None:
        """maps and labels keyed like clip dicts, (M, H_l, W_l); loss (M,) or None; clips (M,) the clip of each row,
        or None to keep no per-clip statistics (scores without intervals, as score_heads reports)."""
        miou = rmse = None
        if self.miou is not None and SEGMENTATION in maps and SEGMENTATION in labels:
            miou = self.miou.update(maps[SEGMENTATION], labels[SEGMENTATION]).flatten(1)
        if self.rmse is not None and DEPTH in maps and DEPTH in labels:
            rmse = self.rmse.update(maps[DEPTH], labels[DEPTH])
        if loss is not None:
            # The stream's sum is kept as it always was, batch by batch, so reported means stay bit for bit.
            self.loss_sum += loss.double().sum().item()
            self.loss_count += loss.numel()
            loss = torch.stack([loss.double(), torch.ones_like(loss.double())], 1)
        if clips is not None:
            for figure, rows in (("miou", miou), ("rmse", rmse), ("feature_loss", loss)):
                if rows is not None:
                    self.clip_stats[figure].add(clips, rows)

    def result(self, with_loss: bool) -> dict[str, float | None]:
        out = {
            "miou": _finite(self.miou.compute()) if self.miou else None,
            "rmse": _finite(self.rmse.compute()) if self.rmse else None,
        }
        if with_loss:
            out["feature_loss"] = self.loss_sum / self.loss_count if self.loss_count else None
        return out


def _finite(value: float) -> float | None:
    """JSON has no NaN: a metric with nothing to score is null."""
    return None if value is None or math.isnan(value) else value


def _sum_ratio(sums: torch.Tensor) -> torch.Tensor:
    """(..., 2) sums of values and counts -> (...) their mean."""
    return sums[..., 0] / sums[..., 1]


# How a figure comes from its clips' summed statistics (ClipStats rows), for many resamples at once.
FIGURE_FROM_SUMS = {
    "miou": lambda sums: mean_iou(*sums.unflatten(-1, (2, -1)).unbind(-2)),
    "rmse": lambda sums: _sum_ratio(sums).sqrt(),
    "feature_loss": _sum_ratio,
    **{term: _sum_ratio for term in (ENERGY, TO_TRUTH, SPREAD)},
}


def resample_weights(num_clips: int, resamples: int = INTERVAL_RESAMPLES, seed: int = INTERVAL_SEED) -> torch.Tensor:
    """(resamples, num_clips) float64: how often each clip is drawn in each bootstrap resample of the clips."""
    drawn = torch.randint(num_clips, (resamples, num_clips), generator=torch.Generator().manual_seed(seed))
    return torch.zeros(resamples, num_clips, dtype=torch.float64).scatter_add_(
        1, drawn, torch.ones(resamples, num_clips, dtype=torch.float64)
    )


def percentile_interval(values: torch.Tensor, level: float = INTERVAL_LEVEL) -> list[float] | None:
    """The central `level` percentile interval of resampled figures (R,), resamples where the figure is undefined
    (NaN) left out; None when none is defined."""
    values = values[~values.isnan()]
    if not len(values):
        return None
    tail = (1 - level) / 2
    low, high = torch.quantile(values, torch.tensor([tail, 1 - tail], dtype=values.dtype)).tolist()
    return [low, high]


def gap_closed(method: float | None, copy_last: float | None, present: float | None) -> float | None:
    """(method - copy_last) / (present - copy_last): 0 = no better than copying, 1 = as good as the truth."""
    if method is None or copy_last is None or present is None or abs(present - copy_last) < 1e-12:
        return None
    return (method - copy_last) / (present - copy_last)


@dataclass
class PictureRecord:
    """One clip's rollout kept for pictures (first square of rectangular frames). S steps, P samples shown."""

    frames: torch.Tensor  # (c + S, 3, H, W) uint8
    true_features: torch.Tensor  # (c + S, N, D)
    imagined: torch.Tensor  # (P, S, N, D) samples shown
    best: torch.Tensor  # (S, N, D) the best sample by feature loss at the last step
    spread: torch.Tensor  # (S, N) per patch, the RMS over D of the standard deviation over all K samples
    mean: torch.Tensor  # (S, N, D)
    grid: tuple[int, int]
    # row name -> {"segmentation"/"depth": (F, H_l, W_l), and with an RGB head "rgb": uint8 (F, 3, H', W')}
    maps: dict[str, dict[str, torch.Tensor]]
    labels: dict[str, torch.Tensor]  # true labels of all c + S frames, (c + S, H_l, W_l)
    context: int
    model: str


def _split_clip(
    batch: dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor], SquareSplit]:
    """Frames, timestamps, actions and labels of a batch, rectangular frames cut into squares (batch doubled)."""
    frames = batch["frames"]
    squares, labels, split = split_labelled(frames, {kind: batch[kind] for kind in LABEL_KINDS if kind in batch})
    if split is None:
        squares, _, split = split_into_squares(frames)
    repeat = 2 if split.is_wide is not None else 1
    timestamps = batch["timestamps"].repeat(repeat, 1)
    actions = batch["actions"].repeat(repeat, 1, 1) if "actions" in batch else None
    return squares, timestamps, actions, labels, split


class RolloutEvaluator:
    """Runs every method on batches of clips and accumulates the scores of each (horizon, method)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        worlds: dict[str, WorldModel],
        heads: TaskHeads | None,
        config: RolloutEvalConfig,
        device: torch.device,
    ):
        """heads None scores feature losses and energy only (footage without labels); pictures then show PCA alone."""
        config.validate()
        if not worlds:
            raise InputError("give at least one world model to evaluate")
        if config.num_samples is None:
            config = dataclasses.replace(config, num_samples=next(iter(worlds.values())).config.num_samples)
        self.tokenizer, self.worlds, self.heads, self.config, self.device = tokenizer, worlds, heads, config, device
        for name, world in worlds.items():
            check_same_backbone(tokenizer, world, name)
        # The first model's rows keep DESIGN.md's names (world_best, world_mean, world_samples); every other model's
        # carry its name, so no series is written twice.
        first = next(iter(worlds))
        self.row_suffixes = {name: "" if name == first else f"_{name}" for name in worlds}
        self.methods = list(BOUNDS) + [
            kind + suffix for suffix in self.row_suffixes.values() for kind in (WORLD_BEST, WORLD_MEAN)
        ]
        self.scores: dict[int, dict[str, MethodScores]] | None = None
        # Every model's world_samples row is scored by the energy score beside copy-last's.
        energy_methods = ["copy_last"] + [WORLD_SAMPLES + suffix for suffix in self.row_suffixes.values()]
        self.energy = {
            h: {m: dict.fromkeys((ENERGY, TO_TRUTH, SPREAD, "count"), 0.0) for m in energy_methods}
            for h in config.horizons
        }
        self.energy_clips = {h: {m: ClipStats() for m in energy_methods} for h in config.horizons}
        # Shortest and longest seconds between consecutive frames of the clips scored (None before any clip).
        self.spacing: tuple[float, float] | None = None
        self.usage_sums = {"own": 0.0, "shuffled": 0.0, "copy": 0.0, "pairs": 0}
        self.generator = torch.Generator(device).manual_seed(config.seed)
        self.pictures: list[PictureRecord] = []
        self.num_clips = 0

    def _start_scores(self, labels: dict[str, torch.Tensor]) -> None:
        heads = self.heads
        seg_head = heads.segmentation if heads is not None else None
        seg = seg_head.num_classes if seg_head is not None and SEGMENTATION in labels else None
        depth = heads is not None and heads.depth is not None and DEPTH in labels
        # Without heads (or labels) every method is scored by feature loss and energy alone; heads that can
        # score none of the labels given are a mistake.
        if heads is not None and labels and seg is None and not depth:
            raise InputError(
                f"the data's labels ({', '.join(labels)}) and the heads ({', '.join(k for k, _ in heads.items())}) "
                "have no task in common to score"
            )
        self.scores = {h: {m: MethodScores(seg, depth) for m in self.methods} for h in self.config.horizons}

    @torch.no_grad()
    def update(self, batch: dict) -> None:
        """One batch of clip dicts (frames (B, T, 3, H, W) uint8, timestamps, labels (B, T, H_l, W_l))."""
        cfg = self.config
        num_frames = batch["frames"].shape[1]
        if num_frames < cfg.clip_frames:
            raise InputError(
                f"context {cfg.context} + horizon {max(cfg.horizons)} needs clips of {cfg.clip_frames} frames, the "
                f"data gives {num_frames}"
            )
        gaps = batch["timestamps"].double().diff(dim=1)
        low, high = gaps.min().item(), gaps.max().item()
        self.spacing = (low, high) if self.spacing is None else (min(self.spacing[0], low), max(self.spacing[1], high))
        batch = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in batch.items()}
        frames, timestamps, actions, labels, split = _split_clip(batch)
        # The clip of each row: a wide frame's two squares are `clips` rows apart and belong to one clip.
        clips = len(batch["frames"])
        clip_index = self.num_clips + torch.arange(len(frames)) % clips
        if self.scores is None:
            self._start_scores(labels)
        windows = (
            [(h, [h]) for h in cfg.horizons]
            if cfg.protocol == "per_horizon"
            else [(max(cfg.horizons), sorted(cfg.horizons))]
        )
        picture_slots = max(0, cfg.num_pictures - len(self.pictures))
        for steps, scored in windows:
            first = num_frames - cfg.context - steps
            window = slice(first, num_frames)
            self._window(
                frames[:, window],
                timestamps[:, window] - timestamps[:, first : first + 1],
                actions[:, window] if actions is not None else None,
                {k: v[:, window] for k, v in labels.items()},
                split,
                clip_index,
                steps,
                scored,
                picture_slots if steps == max(cfg.horizons) else 0,
            )
        self.num_clips += batch["frames"].shape[0]

    def _usage(self, prev: torch.Tensor, nxt: torch.Tensor, grid: tuple[int, int], split: SquareSplit) -> None:
        """Accumulate the usage losses of horizon-1 pairs, features (B, N, D) each; a batch of one clip has nothing to
        shuffle."""
        clips = len(prev) // 2 if split.is_wide is not None else len(prev)
        if clips < 2:
            return
        with autocast(self.device):
            # Squares of one clip are `clips` rows apart, so rolling by one row always takes another clip's token.
            losses = usage_losses(self.tokenizer.deltatok, prev, nxt, self.tokenizer.rope(grid, prev.device))
        for name, value in losses.items():
            self.usage_sums[name] += value.double().sum().item()
        self.usage_sums["pairs"] += len(prev)

    def _maps(
        self, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], split: SquareSplit | None
    ) -> dict[str, torch.Tensor]:
        """The heads' label-size maps of features (M, N, D) (`TaskHeads.predict`); none without heads."""
        return self.heads.predict(features, grid, size, split) if self.heads is not None else {}

    def _window(
        self, frames, timestamps, actions, labels, split, clip_index, steps: int, scored: list[int], picture_slots: int
    ) -> None:
        cfg, c = self.config, self.config.context
        grid = self.tokenizer.grid(frames)
        size = next(iter(labels.values())).shape[-2:] if labels else frames.shape[-2:]
        with autocast(self.device):
            # The backbone runs once per window; every method and world model starts from these features.
            encoded = self.tokenizer.features(frames)  # (B, c + S, N, D)
            reconstructed = self.tokenizer.rollout(frames, steps, encoded)["preds"].float()  # (B, S, N, D)
            imagined = {}
            for name, world in self.worlds.items():
                world_actions = actions if world.action_conditioned else None
                if world.action_conditioned and actions is None:
                    raise InputError(f"world model {name} is action-conditioned but the clips carry no actions")
                out = world.rollout(
                    frames, timestamps, c, steps, cfg.num_samples, world_actions, self.generator, features=encoded
                )
                imagined[name] = out["features"].float()  # (B, K, S, N, D)
            features = encoded.float()
        if steps == max(cfg.horizons):  # one horizon-1 pair per clip, also with per-horizon windows
            self._usage(features[:, c - 1], features[:, c], grid, split)
        first_name = next(iter(self.worlds))
        for h in scored:
            step = h - 1
            target = features[:, c + step]
            frame_labels = {k: v[:, c + step] for k, v in labels.items()}
            candidates = {"present": target, "copy_last": features[:, c - 1], "tokenizer": reconstructed[:, step]}
            sample_sets = {"copy_last": features[:, c - 1 : c]}  # K identical samples
            for name, samples in imagined.items():
                suffix = self.row_suffixes[name]
                candidates[WORLD_BEST + suffix], candidates[WORLD_MEAN + suffix] = self._best_and_mean(
                    samples, step, target
                )
                sample_sets[WORLD_SAMPLES + suffix] = samples[:, :, step]
            for method, predicted in candidates.items():
                loss = None if method == "present" else feature_loss(predicted, target)
                self.scores[h][method].update(self._maps(predicted, grid, size, split), frame_labels, loss, clip_index)
            for method, samples in sample_sets.items():
                sums = self.energy[h][method]
                terms = energy_terms(samples, target)
                for term, values in terms.items():
                    sums[term] += values.double().sum().item()
                sums["count"] += len(target)
                # Per clip: the three terms' sums, then the rows counted (a wide clip's two squares are two rows).
                self.energy_clips[h][method].add(
                    clip_index, torch.stack([*(terms[t] for t in ENERGY_TERMS), torch.ones_like(terms[ENERGY])], 1)
                )
        if picture_slots:
            self._keep_pictures(frames, features, imagined[first_name], labels, grid, split, picture_slots, first_name)

    @staticmethod
    def _best_and_mean(samples: torch.Tensor, step: int, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """samples (B, K, S, N, D) at `step` -> (best sample by feature loss, mean of the K), each (B, N, D)."""
        at_step = samples[:, :, step]
        choice = feature_loss(at_step, target[:, None]).argmin(dim=1)
        return at_step[torch.arange(len(choice), device=choice.device), choice], at_step.mean(dim=1)

    def _keep_pictures(self, frames, features, samples, labels, grid, split, slots: int, model: str) -> None:
        c = self.config.context
        clips = frames.shape[0] // 2 if split.is_wide is not None else frames.shape[0]
        for b in range(min(slots, clips)):
            truth = features[b]
            last = samples.shape[2] - 1
            choice = feature_loss(samples[b, :, last], truth[c + last][None]).argmin()
            rows = {
                "truth": truth,
                "best": samples[b, choice],
                "mean": samples[b].mean(dim=0),
                **{f"sample {k + 1}": samples[b, k] for k in range(min(self.config.picture_samples, samples.shape[1]))},
            }
            # Pictures show one square at frame resolution, so no label-half mapping here.
            maps = {name: self._maps(value, grid, frames.shape[-2:], None) for name, value in rows.items()}
            if self.heads is not None and self.heads.rgb is not None:
                # Only pictures draw the RGB head, so it runs here and not in _maps, which every method's score calls.
                for name, value in rows.items():
                    maps[name][RGB] = self.heads.rgb.render(value.float(), grid)
            self.pictures.append(
                PictureRecord(
                    frames=frames[b].cpu(),
                    true_features=truth.cpu(),
                    imagined=samples[b, : self.config.picture_samples].cpu(),
                    best=rows["best"].cpu(),
                    spread=samples[b].float().std(dim=0, correction=0).pow(2).mean(dim=-1).sqrt().cpu(),
                    mean=rows["mean"].cpu(),
                    grid=grid,
                    maps={name: {k: v.cpu() for k, v in m.items()} for name, m in maps.items()},
                    labels={k: v[b].cpu() for k, v in labels.items()},
                    context=c,
                    model=model,
                )
            )

    def report(self, dataset: str, extra: dict | None = None) -> dict:
        """report.json as docs/method.md ("Scoring imagined futures") describes it: per horizon and row the figures,
        gap_closed_miou and gap_closed_rmse, each figure's 95 % interval over clips (`<figure>_ci95`: [low, high],
        null below MIN_INTERVAL_CLIPS clips), then the clips' frame spacing and the run's settings.

        rollout.py runs in one process, so every clip's statistics are here; a caller sharding clips over processes
        would gather the ClipStats rows (clip indices made global) before reporting."""
        if self.scores is None:
            raise InputError("no clip was evaluated: the data gave none")
        with_intervals = self.num_clips >= MIN_INTERVAL_CLIPS
        weights = resample_weights(self.num_clips) if with_intervals else None
        horizons = {}
        for h in sorted(self.scores):
            results = {m: self.scores[h][m].result(with_loss=m != "present") for m in self.methods}
            # Each figure of each method over the same resamples of the clips (R,), for intervals and gaps.
            resampled: dict[str, dict[str, torch.Tensor]] = {m: {} for m in results}
            if weights is not None:
                for method, scores in self.scores[h].items():
                    for figure, stats in scores.clip_stats.items():
                        if (per_clip := stats.per_clip(self.num_clips)) is not None:
                            resampled[method][figure] = FIGURE_FROM_SUMS[figure](weights @ per_clip)
            present, copy = results["present"], results["copy_last"]
            for method, values in results.items():
                if method in ("present", "copy_last"):
                    continue
                for figure in ("miou", "rmse"):
                    values[f"gap_closed_{figure}"] = gap_closed(values[figure], copy[figure], present[figure])
                    if all(figure in resampled[m] for m in (method, "copy_last", "present")):
                        low, high = resampled["copy_last"][figure], resampled["present"][figure]
                        gap = (resampled[method][figure] - low) / (high - low)
                        resampled[method][f"gap_closed_{figure}"] = gap.masked_fill(
                            (high - low).abs() < 1e-12, math.nan
                        )
            for method, sums in self.energy[h].items():
                count = sums["count"]
                results.setdefault(method, {}).update(
                    {term: sums[term] / count if count else None for term in ENERGY_TERMS}
                )
                per_clip = self.energy_clips[h][method].per_clip(self.num_clips)
                if weights is not None and per_clip is not None:
                    summed = weights @ per_clip
                    resampled.setdefault(method, {}).update(
                        {term: _sum_ratio(summed[:, [i, -1]]) for i, term in enumerate(ENERGY_TERMS)}
                    )
            for method, values in results.items():
                for figure in list(values):
                    has = values[figure] is not None and figure in resampled.get(method, {})
                    values[figure + CI] = percentile_interval(resampled[method][figure]) if has else None
            horizons[str(h)] = results
        cfg = self.config
        return {
            "dataset": dataset,
            "context": cfg.context,
            "num_samples": cfg.num_samples,
            "horizons": horizons,
            "num_clips": self.num_clips,
            "seed": cfg.seed,
            "protocol": cfg.protocol,
            "frame_spacing_s": [round(t, 6) for t in self.spacing],
            "row_suffixes": self.row_suffixes,
            "intervals": {
                "method": "percentile bootstrap over clips",
                "level": INTERVAL_LEVEL,
                "resamples": INTERVAL_RESAMPLES,
                "seed": INTERVAL_SEED,
                "min_clips": MIN_INTERVAL_CLIPS,
                "given": with_intervals,
            },
            "token_usage": self._usage_report(),
            **(extra or {}),
        }

    def _usage_report(self) -> dict[str, float | int | None]:
        sums = self.usage_sums
        if not sums["pairs"]:
            return {"usage": None, "own_loss": None, "shuffled_loss": None, "copy_loss": None, "pairs": 0}
        own, shuffled, copy = (sums[k] / sums["pairs"] for k in ("own", "shuffled", "copy"))
        return {
            "usage": _finite(token_usage(own, shuffled, copy)),
            "own_loss": own,
            "shuffled_loss": shuffled,
            "copy_loss": copy,
            "pairs": sums["pairs"],
        }


def report_table(report: dict) -> str:
    """A Markdown table of every (horizon, method) in a report; a figure with an interval reads "value [low, high]"."""
    columns = ("miou", "rmse", "feature_loss", ENERGY, "gap_closed_miou", "gap_closed_rmse")
    lines = [
        "| horizon | method | " + " | ".join(columns) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in columns) + " |",
    ]
    for h, methods in report["horizons"].items():
        for method, values in methods.items():
            cells = [_cell(values.get(c), values.get(c + CI)) for c in columns]
            lines.append(f"| {h} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: float | None, interval: list[float] | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval is not None else "")


class PixelScores:
    """Streaming L1 and PSNR of predicted pixels against frames, both over [0, 1] and every pixel of the stream."""

    def __init__(self):
        self.abs_sum, self.sq_sum, self.count = 0.0, 0.0, 0

    def update(self, pixels: torch.Tensor, frames: torch.Tensor) -> None:
        """pixels (M, 3, h, w) float in [0, 1] units (clamped here, as pictures show them), frames (M, 3, H, W)
        uint8."""
        error = pixels.float().clamp(0, 1) - pixel_target(frames, pixels.shape[-2:])
        self.abs_sum += error.abs().double().sum().item()
        self.sq_sum += error.pow(2).double().sum().item()
        self.count += error.numel()

    def result(self) -> dict[str, float | None]:
        if not self.count:
            return {"rgb_l1": None, "rgb_psnr": None}
        mse = self.sq_sum / self.count
        # Floored so a perfect fit reads 120 dB rather than an infinity JSON cannot hold.
        return {"rgb_l1": self.abs_sum / self.count, "rgb_psnr": 10 * math.log10(1 / max(mse, 1e-12))}


@torch.no_grad()
def score_heads(
    tokenizer: Tokenizer, heads: TaskHeads, dataset: Dataset, batch_size: int, device: torch.device
) -> dict[str, float | None]:
    """mIoU (ignore 255) and depth RMSE (valid pixels) of the heads on true features of every frame of `dataset`,
    and with an RGB head its pixel L1 and PSNR (`rgb_l1`, `rgb_psnr`) against the frames."""
    seg = heads.segmentation.num_classes if heads.segmentation is not None else None
    scores = MethodScores(seg, heads.depth is not None)
    pixels = PixelScores()
    for batch in DataLoader(dataset, batch_size=batch_size):
        given = {kind: batch[kind] for kind in LABEL_KINDS if kind in batch}
        frames, labels, split = split_labelled(batch["frames"], given)
        frames = frames.to(device)
        features = tokenizer.features(frames).flatten(0, 1)
        grid = tokenizer.grid(frames)
        if heads.rgb is not None:
            pixels.update(heads.rgb(features.float(), grid), frames.flatten(0, 1))
        if not labels:
            continue
        labels = {kind: values.to(device).flatten(0, 1) for kind, values in labels.items()}
        size = next(iter(labels.values())).shape[-2:]
        scores.update(heads.predict(features, grid, size, split), labels, None)
    return {**scores.result(with_loss=False), **(pixels.result() if heads.rgb is not None else {})}
