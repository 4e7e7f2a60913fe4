"""The readout: how an imagined frame looks, from its delta tokens alone, so a planner's cost never decodes.

Scoring every imagined step of every candidate by a feature distance means decoding
each step to all N patch features, and at ViT-B/512 that decode is a thousand times
the predictor. The readout answers the cost's question in a compact space instead:
the frame's *summary*, its patch features average-pooled to `grid` x `grid` cells
(g*g, D). A goal image is summarised once by pooling its backbone features.

Delta tokens say what changed, not where things are, so the readout starts from an
anchor, the summary of the last real frame, and adds what the tokens imagined since
imply: g*g queries (one per cell) at the read frame's time cross-attend to the
anchor's cells and to those tokens (a small `Predictor`), and each cell's output
is added to its anchor cell. Each query is a learned cell vector plus a projection
of its own anchor cell (`anchor_queries`): a query that only knows which cell it is
must first find that cell's content among the anchor entries by attention, and in
a few hundred steps it never did (its reads stayed at the anchor, docs/method.md: "The
readout and the token cost"). Trained alongside the world model on true tokens
(teacher-forced), with the clip's first frame as the anchor; the world model's own
training is unchanged, and a model without a readout plans with the feature cost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.runtime.errors import ConfigError, InputError
from worldmodel.feature_maps import features_to_map
from worldmodel.objectives import Objective, regression_loss
from worldmodel.predictor import HistoryCache, Predictor, PredictorConfig

READOUT_LOSS = ("smooth_l1", 0.1)  # as the world model's feature loss


@dataclass
class ReadoutConfig:
    """The readout (worldmodel.readout): summaries of imagined frames from their tokens, so a planner's goal cost needs
    no decoding."""

    enabled: bool = False  # train a readout with the world model; without one, planning uses the feature cost
    grid: int = 4  # summaries pool the patch grid to grid x grid cells
    # Each cell's query also carries its anchor cell's summary, projected (see the module docstring);
    # false: learned cell vectors alone, the first design (readouts saved before this option).
    anchor_queries: bool = True
    predictor: PredictorConfig = field(
        default_factory=PredictorConfig
    )  # the readout's own, over anchor cells and tokens


def summarize(features: torch.Tensor, grid: tuple[int, int], cells: int) -> torch.Tensor:
    """Patch features (..., N, D) on a (rows, cols) grid -> summaries (..., cells * cells, D), average-pooled."""
    rows, cols = grid
    if cells > min(rows, cols):
        raise InputError(f"a {cells}x{cells} summary needs a patch grid at least that large, got {rows}x{cols}")
    lead = features.shape[:-2]
    maps = features_to_map(features.reshape(-1, *features.shape[-2:]).float(), grid)
    pooled = F.adaptive_avg_pool2d(maps, cells).flatten(2).transpose(1, 2)
    return pooled.reshape(*lead, cells * cells, features.shape[-1])


@dataclass
class ReadoutState:
    """The readout's view of R imagined futures: projected anchor cells and tokens so far, the anchor, and its cell
    queries."""

    cache: HistoryCache
    anchor: torch.Tensor  # (R, g*g, D)
    queries: torch.Tensor  # (R, g*g, W)

    def repeat(self, times: int) -> ReadoutState:
        return ReadoutState(
            self.cache.repeat(times), self.anchor.repeat_interleave(times, 0), self.queries.repeat_interleave(times, 0)
        )


class Readout(nn.Module):
    def __init__(self, cfg: ReadoutConfig, dim: int):
        super().__init__()
        if cfg.grid < 1:
            raise ConfigError(f"model.readout.grid must be at least 1, got {cfg.grid}")
        self.cfg = cfg
        cells = cfg.grid * cfg.grid
        self.predictor = Predictor(cfg.predictor, dim)
        self.cell_embed = nn.Parameter(torch.zeros(cells, dim))  # tells the anchor's cells apart
        self.cell_queries = nn.Parameter(torch.zeros(cells, cfg.predictor.hidden_size))
        nn.init.trunc_normal_(self.cell_embed, std=cfg.predictor.initializer_range)
        nn.init.trunc_normal_(self.cell_queries, std=cfg.predictor.initializer_range)
        self.anchor_proj = None
        if cfg.anchor_queries:
            self.anchor_proj = nn.Linear(dim, cfg.predictor.hidden_size)
            nn.init.trunc_normal_(self.anchor_proj.weight, std=cfg.predictor.initializer_range)
            nn.init.zeros_(self.anchor_proj.bias)

    @property
    def cells(self) -> int:
        return self.cfg.grid * self.cfg.grid

    def summarize(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Patch features (..., N, D) -> the summaries this readout reads out, (..., g*g, D)."""
        return summarize(features, grid, self.cfg.grid)

    def _anchor_entries(self, anchor: torch.Tensor, time: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return anchor.to(self.cell_embed.dtype) + self.cell_embed, time[:, None].expand(-1, self.cells)

    def _queries(self, anchor: torch.Tensor) -> torch.Tensor:
        """Anchor summaries (R, g*g, D) -> the cell queries of one read, (R, g*g, W)."""
        queries = self.cell_queries.expand(len(anchor), -1, -1)
        if self.anchor_proj is not None:
            queries = queries + self.anchor_proj(anchor.to(self.anchor_proj.weight.dtype))
        return queries

    def loss(self, tokens: torch.Tensor, summaries: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        """Teacher-forced: tokens (B, T, D), true summaries (B, T, g*g, D), timestamps (B, T) -> scalar."""
        return regression_loss(self.predict(tokens, summaries, timestamps), summaries[:, 1:], *READOUT_LOSS).mean()

    def predict(self, tokens: torch.Tensor, summaries: torch.Tensor, timestamps: torch.Tensor) -> torch.Tensor:
        """Summaries of frames 1..T-1, (B, T-1, g*g, D), each read from frame 0's summary (the anchor) and tokens
        1..i."""
        batch, frames = tokens.shape[:2]
        if summaries.shape[:3] != (batch, frames, self.cells):
            raise InputError(
                f"readout summaries must be (B, T, {self.cells}, D) = ({batch}, {frames}, {self.cells}, D), got "
                f"{tuple(summaries.shape)}"
            )
        anchor, anchor_time = self._anchor_entries(summaries[:, 0], timestamps[:, 0])
        history = torch.cat((anchor, tokens[:, 1:].to(anchor.dtype)), dim=1)
        history_time = torch.cat((anchor_time, timestamps[:, 1:]), dim=1)
        read_frame = torch.arange(1, frames, device=tokens.device).repeat_interleave(self.cells)
        token_frame = torch.arange(1, frames, device=tokens.device)
        mask = torch.cat(
            (
                read_frame.new_ones(len(read_frame), self.cells, dtype=torch.bool),
                token_frame[None, :] <= read_frame[:, None],
            ),
            dim=1,
        )
        positions = timestamps[:, 1:].repeat_interleave(self.cells, dim=1)
        delta = self.predictor(
            self._queries(summaries[:, 0]).repeat(1, frames - 1, 1), positions, history, history_time, mask
        )
        return summaries[:, :1] + delta.unflatten(1, (frames - 1, self.cells)).to(summaries.dtype)

    def start(self, anchor: torch.Tensor, time: torch.Tensor) -> ReadoutState:
        """Anchor summaries (R, g*g, D) of real frames at `time` (R,) -> the state imagination appends to."""
        entries, positions = self._anchor_entries(anchor, time)
        return ReadoutState(self.predictor.encode_history(entries, positions), anchor, self._queries(anchor))

    def append(self, state: ReadoutState, tokens: torch.Tensor, time: torch.Tensor) -> ReadoutState:
        """One imagined token per row, (R, D) at `time` (R,)."""
        new = self.predictor.encode_history(tokens[:, None].to(self.cell_embed.dtype), time[:, None])
        return ReadoutState(state.cache.append(new), state.anchor, state.queries)

    def read(self, state: ReadoutState, time: torch.Tensor) -> torch.Tensor:
        """The summary (R, g*g, D) of the frame at `time` (R,): the newest one appended."""
        positions = time[:, None].expand(-1, self.cells)
        delta = self.predictor.attend(state.queries, positions, state.cache)
        return state.anchor + delta.to(state.anchor.dtype)


class ObjectiveWithReadout(nn.Module):
    """What trains when a world model has a readout: both losses in one forward, so DDP sees every parameter used."""

    def __init__(self, objective: Objective, readout: Readout):
        super().__init__()
        self.objective = objective
        self.readout = readout

    def forward(
        self, readout_inputs: dict, generator: torch.Generator, **inputs
    ) -> tuple[torch.Tensor, dict[str, float]]:
        loss, metrics = self.objective(**inputs, generator=generator)
        readout_loss = self.readout.loss(**readout_inputs)
        return loss + readout_loss, {**metrics, "readout_loss": float(readout_loss.detach())}
