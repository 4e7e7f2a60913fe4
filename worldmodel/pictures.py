"""Pictures of what the model sees and imagines: feature PCA, label colours, grids, animations, plots, and one
clip's imagined futures beside its truth (`futures_picture`).

Features are shown as RGB by projecting them on the top three principal
components of the TRUE features; imagined features go through the same
projection and scaling, so equal colours mean equal features across rows.
Images here are numpy arrays (H, W, 3), float in [0, 1] or uint8.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import imageio.v3 as iio
import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import hsv_to_rgb
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from tokenizer.data.clip import IGNORE_INDEX
from tokenizer.runtime.errors import InputError
from tokenizer.runtime.files import atomic_write, atomic_write_bytes
from worldmodel.heads import TaskHeads
from worldmodel.training import feature_loss
from worldmodel.world import WorldModel

LABEL_PAD = 4  # pixels around text labels in a grid
BACKGROUND = 255  # white grid background and blank cells
_FONT = ImageFont.load_default()  # PIL's own font: labels need no font file


@dataclass
class FeaturePCA:
    """A 3-component PCA of patch features with a fixed per-component scaling to [0, 1]."""

    mean: np.ndarray  # (D,)
    components: np.ndarray  # (D, 3), zero columns where the data has fewer than 3 directions
    low: np.ndarray  # (3,)
    span: np.ndarray  # (3,)

    @classmethod
    def fit(cls, features: torch.Tensor | np.ndarray, quantile: float = 0.01) -> FeaturePCA:
        """Fit on true features (..., D). Each component maps its [q, 1-q] quantile range to [0, 1].

        Quantiles rather than min/max keep a few outlier patches (DINO's high-norm
        tokens) from washing out every other colour. NaN/inf are zeroed; constant
        features give an all-black projection instead of dividing by zero.
        """
        x = _as_float64(features)
        x = x.reshape(-1, x.shape[-1])
        dim = x.shape[1]
        mean = x.mean(0)
        centred = x - mean
        components = np.zeros((dim, 3))
        if len(x) >= 2 and centred.std() > 1e-8:
            covariance = centred.T @ centred / (len(x) - 1)
            _, vectors = np.linalg.eigh(covariance)
            top = vectors[:, ::-1][:, : min(3, dim)]
            # Eigenvectors have arbitrary sign; fixing it keeps colours stable from run to run.
            top = top * np.where(top.sum(0) < 0, -1.0, 1.0)
            components[:, : top.shape[1]] = top
        projected = centred @ components
        low = np.quantile(projected, quantile, axis=0)
        high = np.quantile(projected, 1 - quantile, axis=0)
        return cls(mean, components, low, np.maximum(high - low, 1e-6))

    def to_rgb(self, features: torch.Tensor | np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """Frames of patch features (F, N, D), N = h * w row-major -> images (F, h, w, 3) in [0, 1]."""
        x = _as_float64(features)
        h, w = grid
        if x.ndim != 3 or x.shape[1] != h * w or x.shape[2] != len(self.mean):
            raise InputError(
                f"features must have shape (F, {h}*{w}, {len(self.mean)}) to colour with this PCA, got {tuple(x.shape)}"
            )
        rgb = ((x - self.mean) @ self.components - self.low) / self.span
        return rgb.clip(0, 1).reshape(len(x), h, w, 3).astype(np.float32)


def pca_rgb(
    true: torch.Tensor | np.ndarray, grid: tuple[int, int], *imagined: torch.Tensor | np.ndarray
) -> list[np.ndarray]:
    """PCA fitted on `true` (F, N, D) only, applied to it and to each imagined (F', N, D): [(F, h, w, 3), ...]."""
    pca = FeaturePCA.fit(true)
    return [pca.to_rgb(features, grid) for features in (true, *imagined)]


def _as_float64(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def seg_palette() -> np.ndarray:
    """Fixed (256, 3) colours in [0, 1] for class ids 0-255; 255 (unlabelled) is black.

    Hues step by the golden ratio so neighbouring ids get far-apart colours;
    saturation and value cycle so ids whose hues come close still differ.
    """
    ids = np.arange(256)
    hue = (ids * 0.61803398875) % 1.0
    saturation = 0.55 + 0.45 * ((ids * 7) % 3) / 2
    value = 0.65 + 0.35 * ((ids * 5) % 4) / 3
    palette = hsv_to_rgb(np.stack([hue, saturation, value], axis=1))
    palette[IGNORE_INDEX] = 0.0
    return palette


def colorize_seg(labels: torch.Tensor | np.ndarray) -> np.ndarray:
    """Class ids (..., H, W) in [0, 255] -> colours (..., H, W, 3) in [0, 1]."""
    ids = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"segmentation labels must be integer class ids, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() > 255):
        raise InputError(f"segmentation labels must lie in [0, 255] to colour, got [{ids.min()}, {ids.max()}]")
    return seg_palette()[ids]


def shared_vmax(*depths: torch.Tensor | np.ndarray) -> float:
    """The largest finite depth across several maps, so they can share one colour scale."""
    values = [_as_float64(d).max() for d in depths if np.size(d)]
    return max(max(values, default=0.0), 1e-6)


def colorize_depth(depth: torch.Tensor | np.ndarray, vmax: float) -> np.ndarray:
    """Depth (..., H, W) -> viridis colours (..., H, W, 3) over [0, vmax]; pixels without depth (<= 0) black.

    Pass the same `vmax` (see `shared_vmax`) for truth and predictions so equal colours mean equal depth.
    """
    if vmax <= 0:
        raise InputError(f"vmax must be positive, got {vmax}")
    d = _as_float64(depth)
    rgb = matplotlib.colormaps["viridis"]((d / vmax).clip(0, 1))[..., :3]
    rgb[d <= 0] = 0.0
    return rgb


def colorize_heat(values: torch.Tensor | np.ndarray, vmax: float) -> np.ndarray:
    """Non-negative magnitudes (..., H, W) -> magma colours (..., H, W, 3) over [0, vmax]: black is none."""
    return matplotlib.colormaps["magma"]((_as_float64(values) / max(vmax, 1e-12)).clip(0, 1))[..., :3]


def upscale_nearest(image: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge (..., H, W, C) by an integer factor with nearest-neighbour, so patches stay crisp."""
    if factor < 1:
        raise InputError(f"upscale factor must be >= 1, got {factor}")
    return np.repeat(np.repeat(image, factor, axis=-3), factor, axis=-2)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float in [0, 1] or uint8, RGB (..., H, W, 3) or one grey image (H, W) -> uint8 RGB (..., H, W, 3)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.nan_to_num(image.astype(np.float64)).clip(0, 1) * 255).round().astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.ndim < 3 or image.shape[-1] != 3:
        raise InputError(f"images must be RGB (..., H, W, 3) or grey (H, W), got shape {image.shape}")
    return image


def _text_size(text: str) -> tuple[int, int]:
    """(width, height) in pixels of `text` (lines split at newlines) in PIL's default font."""
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=_FONT)
    return right - left, bottom - top


def row_label_width(labels: Sequence[str]) -> int:
    """The left margin image_grid gives these row labels, for grids that must share one (an animation's frames)."""
    return max((_text_size(text)[0] for text in labels), default=0) + 2 * LABEL_PAD


def image_grid(
    rows: Sequence[Sequence[np.ndarray | None]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    label_width: int | None = None,
) -> np.ndarray:
    """Lay images out in a labelled table -> uint8 (H, W, 3).

    Every cell is as large as the largest image; smaller ones are resized with
    nearest-neighbour to fill it. None cells stay blank (white). Labels (lines split
    at newlines) go in margins, row labels on the left, column labels on top, so the
    cells keep their pixels. `label_width` sets the left margin (`row_label_width`);
    None fits it to `row_labels`.
    """
    if not rows or not any(cell is not None for row in rows for cell in row):
        raise InputError("image_grid needs at least one image")
    if row_labels is not None and len(row_labels) != len(rows):
        raise InputError(f"{len(row_labels)} row labels for {len(rows)} rows")
    num_cols = max(len(row) for row in rows)
    if col_labels is not None and len(col_labels) > num_cols:
        raise InputError(f"{len(col_labels)} column labels for {num_cols} columns")
    cells = [[None if cell is None else to_uint8(cell) for cell in row] for row in rows]
    cell_h = max(cell.shape[0] for row in cells for cell in row if cell is not None)
    cell_w = max(cell.shape[1] for row in cells for cell in row if cell is not None)

    left_w = label_width if label_width is not None else row_label_width(row_labels) if row_labels else 0
    if row_labels and left_w < row_label_width(row_labels):
        raise InputError(f"label_width {left_w} is narrower than the row labels ({row_label_width(row_labels)})")
    top_h = max((_text_size(t)[1] for t in col_labels), default=0) + 2 * LABEL_PAD if col_labels else 0
    canvas = Image.new("RGB", (left_w + num_cols * cell_w, top_h + len(rows) * cell_h), (BACKGROUND,) * 3)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            if cell is None:
                continue
            tile = Image.fromarray(cell)
            if tile.size != (cell_w, cell_h):
                tile = tile.resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(tile, (left_w + c * cell_w, top_h + r * cell_h))
    draw = ImageDraw.Draw(canvas)
    for r, text in enumerate(row_labels or []):
        draw.text(
            (LABEL_PAD, top_h + r * cell_h + (cell_h - _text_size(text)[1]) // 2), text, fill=(0, 0, 0), font=_FONT
        )
    for c, text in enumerate(col_labels or []):
        draw.text(
            (left_w + c * cell_w + (cell_w - _text_size(text)[0]) // 2, LABEL_PAD),
            text,
            fill=(0, 0, 0),
            font=_FONT,
            align="center",
        )
    return np.asarray(canvas)


def save_png(path: str | Path, image: np.ndarray) -> None:
    """Write one image (H, W, 3), float in [0, 1] or uint8, as a PNG, atomically."""
    image = to_uint8(image)
    if image.ndim != 3:
        raise InputError(f"save_png takes one image (H, W, 3), got shape {image.shape}")
    atomic_write_bytes(path, iio.imwrite("<bytes>", image, extension=".png"))


def save_animation(path: str | Path, frames: Sequence[np.ndarray] | np.ndarray, fps: float = 4.0) -> None:
    """Write frames (F, H, W, 3) as a looping GIF or an MP4 (H.264), chosen by the suffix, atomically."""
    path = Path(path)
    shapes = {np.shape(frame) for frame in frames}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise InputError(
            f"save_animation needs a non-empty sequence of (H, W, 3) frames of one size, got shapes {sorted(shapes)}"
        )
    video = to_uint8(np.stack([np.asarray(frame) for frame in frames]))
    if fps <= 0:
        raise InputError(f"fps must be positive, got {fps}")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        data = iio.imwrite("<bytes>", video, extension=".gif", duration=1000.0 / fps, loop=0)
        atomic_write_bytes(path, data)
    elif suffix == ".mp4":
        # H.264 in yuv420p needs even sides; pad with black rather than let the encoder rescale.
        pad_h, pad_w = video.shape[1] % 2, video.shape[2] % 2
        video = np.pad(video, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
        atomic_write(
            path, lambda tmp: iio.imwrite(tmp, video, plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=2)
        )
    else:
        raise InputError(f"animation path {path} must end in .gif or .mp4")


def plot_metric_vs_horizon(
    results: dict[str, dict[int, float]], metric_name: str, path: str | Path, title: str | None = None
) -> None:
    """One line per method of metric against prediction horizon (frames ahead), saved atomically as PNG/PDF/SVG."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf", "svg"):
        raise InputError(f"plot path {path} must end in .png, .pdf or .svg")
    if not results:
        raise InputError("no results to plot")
    # A bare Figure on the Agg canvas: no pyplot global state, no display needed.
    figure = Figure(figsize=(7.5, 4), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    markers = "osD^vP*Xh"
    for i, (method, by_horizon) in enumerate(results.items()):
        horizons = sorted(by_horizon)
        axes.plot(horizons, [by_horizon[h] for h in horizons], marker=markers[i % len(markers)], label=method)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("horizon (frames ahead)")
    axes.set_ylabel(metric_name)
    axes.set_title(title or f"{metric_name} vs horizon")
    axes.grid(alpha=0.3)
    # Beside the axes, not on them: with eight methods an inner legend covers the lines.
    axes.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt)
    atomic_write_bytes(path, buffer.getvalue())


# Shown side by side, so every cell of a rollout picture gets this many pixels per side.
ROLLOUT_CELL = 128


def _cell(image: np.ndarray, side: int = ROLLOUT_CELL) -> np.ndarray:
    """Enlarge an (H, W, 3) image with nearest-neighbour to about `side` pixels high."""
    return upscale_nearest(to_uint8(image), max(1, side // image.shape[0]))


def _rollout_cells(record) -> dict[str, list[np.ndarray]]:
    """Per row name, one picture per frame of the record: frames, then RGB (with an RGB head), PCA, segmentation
    and depth of each feature set."""
    truth = record.true_features
    pca = FeaturePCA.fit(truth)
    frames = record.frames.permute(0, 2, 3, 1).numpy()
    depth_sources = [m["depth"] for m in record.maps.values() if "depth" in m]
    if "depth" in record.labels:
        depth_sources.append(record.labels["depth"])
    vmax = shared_vmax(*depth_sources) if depth_sources else 1.0
    cells: dict[str, list[np.ndarray]] = {"frame": list(frames)}
    for key, name in (("segmentation", "label seg"), ("depth", "label depth")):
        if key in record.labels:
            values = record.labels[key]
            cells[name] = list(colorize_seg(values) if key == "segmentation" else colorize_depth(values, vmax))
    features = {"truth": truth, "best": record.best, "mean": record.mean}
    features.update({f"sample {k + 1}": record.imagined[k] for k in range(len(record.imagined))})
    for name, value in features.items():
        maps = record.maps[name]
        if "rgb" in maps:
            cells[f"{name} rgb"] = list(maps["rgb"].permute(0, 2, 3, 1).numpy())
        cells[f"{name} PCA"] = list(pca.to_rgb(value, record.grid))
        if "segmentation" in maps:
            cells[f"{name} seg"] = list(colorize_seg(maps["segmentation"]))
        if "depth" in maps:
            cells[f"{name} depth"] = list(colorize_depth(maps["depth"], vmax))
    # Where the features change from one frame to the next, truth and best imagined future on one scale,
    # and where the K imagined futures disagree: a token that carries motion lights up where things move.
    rows_cols = record.grid
    truth_change = _rms(truth[1:] - truth[:-1])
    steps = record.best.shape[0]
    best_prev = torch.cat((truth[-steps - 1 : -steps], record.best[:-1]))
    best_change = _rms(record.best - best_prev)
    vmax = max(truth_change.max().item(), best_change.max().item(), record.spread.max().item(), 1e-12)
    cells["truth change"] = [np.zeros_like(frames[0], dtype=np.float64)] + list(
        colorize_heat(truth_change.unflatten(-1, rows_cols), vmax)
    )
    cells["best change"] = list(colorize_heat(best_change.unflatten(-1, rows_cols), vmax))
    cells["sample spread"] = list(colorize_heat(record.spread.unflatten(-1, rows_cols), vmax))
    return {name: [_cell(image) for image in images] for name, images in cells.items()}


def _rms(delta: torch.Tensor) -> torch.Tensor:
    """(..., N, D) -> (..., N): the RMS over the feature dimension."""
    return delta.float().pow(2).mean(dim=-1).sqrt()


# How a rollout picture's rows read: who (the truth, a sample, ...) and how it is drawn.
_WHO = {
    "frame": "video",
    "label": "label",
    "truth": "truth",
    "best": "best sample",
    "mean": "mean of samples",
    "sample": "samples",
}
_WHAT = {
    "rgb": "RGB head",
    "PCA": "feature PCA",
    "seg": "segmentation",
    "depth": "depth",
    "change": "feature change",
    "spread": "spread over the K",
}


def _who_what(name: str) -> tuple[str, str]:
    """A _rollout_cells row name ("best PCA", "sample 2 rgb", "frame") -> (who, how it is drawn)."""
    if name == "frame":
        return "video", "frames"
    who, what = name.rsplit(" ", 1)
    return _WHO.get(who, who), _WHAT[what]


def _row_label(name: str) -> str:
    who, what = _who_what(name)
    return who if name == "frame" else f"{who}: {what}"


def step_labels(context: int, steps: int, seconds: Sequence[float] | None = None) -> list[str]:
    """Column labels of a clip's frames: the context t-(c-1) .. t, then the future t+1 .. t+steps; with `seconds` (each
    frame's time from the last context frame) a second line gives it."""
    labels = []
    for i in range(context + steps):
        offset = i - context + 1
        name = "t" if offset == 0 else f"t{offset:+d}"
        second = [f"context, {seconds[i]:+.2f} s" if i < context else f"{seconds[i]:+.2f} s"] if seconds else []
        labels.append("\n".join([name, *(second or (["context"] if i < context else []))]))
    return labels


def rollout_picture(record) -> np.ndarray:
    """One clip's rollout as a labelled table (uint8 (H, W, 3)), from an evaluation.PictureRecord.

    Left: a column per frame (the context t-(c-1) .. t, then each imagined step t+1 ..):
    the video, then the true features' RGB (when the heads hold an RGB head: the
    frames as the head gives them back), PCA, segmentation and depth, then those of
    the best and the mean imagined futures, and the given labels; heat maps of how
    much each patch's features change from the frame before (truth and best) and of
    how much the K samples differ (spread). Right: at the last step, the truth beside
    the samples. Every row and column is labelled in the margins.
    """
    cells = _rollout_cells(record)
    context = record.context
    steps = len(cells["frame"]) - context
    order = ["frame", *[n for n in ("label seg", "label depth") if n in cells]]
    for name in ("truth", "best", "mean"):
        order += [
            n for n in (f"{name} rgb", f"{name} PCA", f"{name} seg", f"{name} depth", f"{name} change") if n in cells
        ]
    order.append("sample spread")
    rows = []
    for name in order:
        imagined = name.split(" ")[0] in ("best", "mean", "sample")
        rows.append([None] * context + cells[name] if imagined else cells[name])
    left = image_grid(rows, row_labels=[_row_label(n) for n in order], col_labels=step_labels(context, steps))

    samples = [n.split(" PCA")[0] for n in cells if n.startswith("sample") and n.endswith("PCA")]
    if not samples:
        return left
    kinds = [k for k in ("rgb", "PCA", "seg", "depth") if f"{samples[0]} {k}" in cells]
    right = image_grid(
        [[cells[f"{s} {k}"][-1] for s in ("truth", *samples)] for k in kinds],
        row_labels=[f"t+{steps}: {_WHAT[k]}" for k in kinds],
        col_labels=["truth", *samples],
    )
    height = max(left.shape[0], right.shape[0])
    gap = np.full((height, ROLLOUT_CELL // 4, 3), BACKGROUND, np.uint8)
    return np.concatenate([_pad_to(left, height, left.shape[1]), gap, _pad_to(right, height, right.shape[1])], axis=1)


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad (H, W, 3) with background at the bottom and right to (height, width, 3)."""
    return np.pad(
        image, ((0, height - image.shape[0]), (0, width - image.shape[1]), (0, 0)), constant_values=BACKGROUND
    )


def rollout_animation(record) -> list[np.ndarray]:
    """One clip's rollout as animation frames: each shows one time step, labelled, the truth beside the best and mean
    imagined (RGB first when the heads hold an RGB head)."""
    cells = _rollout_cells(record)
    context = record.context
    names = ["frame"] + [n for n in cells if n.split(" ")[0] in ("truth", "best", "mean")]
    col_labels = ["\n".join(_who_what(n)) for n in names]
    times = [label.replace("\n", " ") for label in step_labels(context, len(cells["frame"]) - context)]
    # One left margin for every frame, so they all have one size and nothing is padded on.
    width = row_label_width(times)
    frames = []
    for t, time in enumerate(times):
        imagined = t >= context
        # Best and mean exist only for imagined steps, so their lists start at the first imagined frame.
        row = [
            (cells[n][t - context] if imagined else None) if n.startswith(("best", "mean")) else cells[n][t]
            for n in names
        ]
        frames.append(image_grid([row], row_labels=[time], col_labels=col_labels, label_width=width))
    return frames


@dataclass
class Futures:
    """One clip's context and true future beside K imagined futures, decoded to pictures (`imagine_futures`).

    The true features and the imagined ones go through the same decoding (an RGB head, or a PCA fitted on the
    true features), so a sample's row differs from the truth's only by what the world model imagined: what the
    decoding itself loses (an RGB head's patches, PCA's three colours) shows in the truth's row too.
    """

    video: list[np.ndarray]  # c + S frames uint8 (H, W, 3): the context, then the S true future frames (S <= h)
    truth: list[np.ndarray]  # the same frames' true features, decoded: uint8 (H', W', 3)
    samples: list[list[np.ndarray]]  # K imagined futures of h frames each, decoded: uint8 (H', W', 3)
    seconds: list[float]  # the time of each of the c + h frames, from the last context frame
    context: int  # c
    decoding: str  # "RGB head" or "feature PCA"
    closest: int | None  # the sample nearest the true future (feature loss over its S steps); None when S = 0


@torch.no_grad()
def imagine_futures(
    world: WorldModel,
    frames: torch.Tensor,
    timestamps: torch.Tensor,
    horizon: int,
    context: int | None = None,
    num_samples: int | None = None,
    heads: TaskHeads | None = None,
    seed: int = 0,
) -> Futures:
    """Imagine K futures of one clip and decode them beside its truth.

    frames uint8 (1, T, 3, H, W) at timestamps (1, T) in seconds (tokenizer.read_clip gives both): the first
    `context` frames (default T - horizon) are what the world model sees; the frames after them, at most `horizon`,
    are the true future (none: the futures go beyond the clip). Decoded by `heads.rgb` when given, else by a PCA of
    the clip's true features. K = `num_samples`, default the world model's own; `seed` fixes them.
    """
    if frames.ndim != 5 or frames.shape[0] != 1 or timestamps.shape != frames.shape[:2]:
        raise InputError(
            f"one clip: frames (1, T, 3, H, W) with timestamps (1, T), got {tuple(frames.shape)} and "
            f"{tuple(timestamps.shape)}"
        )
    length = frames.shape[1]
    if horizon < 1:
        raise InputError(f"horizon must be at least 1, got {horizon}")
    if context is None:
        if length <= horizon:
            raise InputError(
                f"a clip of {length} frames leaves no context before {horizon} true future frames; read at least "
                f"{horizon + 1} frames, or pass context={length} to imagine beyond the clip"
            )
        context = length - horizon
    elif not 1 <= context <= length:
        raise InputError(f"context must be 1 to {length} frames (the clip's length), got {context}")
    if length - context > horizon:
        raise InputError(
            f"the clip holds {length - context} frames after its context of {context}, more than horizon {horizon}: "
            f"pass horizon={length - context} or a shorter clip"
        )
    # The clip's own spacing, over all its frames, so that a one-frame context still knows it.
    dt = ((timestamps[0, -1] - timestamps[0, 0]) / (length - 1)).item() if length > 1 else None
    device = next(world.parameters()).device
    frames = frames.to(device)
    truth = world.tokenizer.features(frames)[0]  # (T, N, D)
    futures = world.predict(
        frames[:, :context],
        timestamps[:, :context],
        horizon,
        num_samples,
        dt=dt,
        generator=torch.Generator(device).manual_seed(seed),
    )
    imagined = futures["features"][0]  # (K, h, N, D)
    grid = world.tokenizer.grid(frames)
    if heads is not None and heads.rgb is not None:
        decoding = "RGB head"

        def decode(features: torch.Tensor) -> list[np.ndarray]:
            return list(heads.rgb.render(features.float(), grid).permute(0, 2, 3, 1).cpu().numpy())

    else:
        decoding = "feature PCA"
        pca = FeaturePCA.fit(truth)
        patch = frames.shape[-2] // grid[0]

        def decode(features: torch.Tensor) -> list[np.ndarray]:
            return list(to_uint8(upscale_nearest(pca.to_rgb(features, grid), patch)))

    known = length - context
    closest = None
    if known:
        closest = int(feature_loss(imagined[:, :known], truth[None, context:]).mean(dim=1).argmin())
    last = timestamps[0, context - 1].item()
    seconds = [t - last for t in timestamps[0].tolist()] + [t - last for t in futures["times"][0, known:].tolist()]
    return Futures(
        video=list(frames[0].permute(0, 2, 3, 1).cpu().numpy()),
        truth=decode(truth),
        samples=[decode(sample) for sample in imagined],
        seconds=seconds,
        context=context,
        decoding=decoding,
        closest=closest,
    )


def _futures_rows(futures: Futures) -> tuple[list[str], list[list[np.ndarray | None]]]:
    """Row labels and rows of cells (c + h columns, cells enlarged to about ROLLOUT_CELL): video, truth, samples."""
    steps = len(futures.samples[0])
    columns = futures.context + steps

    def row(images: list[np.ndarray], start: int = 0) -> list[np.ndarray | None]:
        return [None] * start + [_cell(image) for image in images] + [None] * (columns - start - len(images))

    labels = ["video", f"truth: {futures.decoding}"]
    rows = [row(futures.video), row(futures.truth)]
    for k, sample in enumerate(futures.samples):
        labels.append(f"sample {k + 1}: {futures.decoding}" + (", closest" if k == futures.closest else ""))
        rows.append(row(sample, futures.context))
    return labels, rows


def draw_futures(futures: Futures) -> np.ndarray:
    """The futures as one labelled table, uint8 (H, W, 3): a column per frame (the context t-(c-1) .. t, then the
    imagined steps t+1 .. t+h, each with its time), and rows: the video (the context, then the true future where the
    clip holds it), the truth decoded, then each sample decoded, under the context's columns left blank."""
    labels, rows = _futures_rows(futures)
    columns = step_labels(futures.context, len(futures.samples[0]), futures.seconds)
    return image_grid(rows, row_labels=labels, col_labels=columns)


def animate_futures(futures: Futures) -> list[np.ndarray]:
    """The futures as animation frames, one per time step: the video, the truth and every sample side by side."""
    labels, rows = _futures_rows(futures)
    times = [
        label.replace("\n", ", ")
        for label in step_labels(futures.context, len(rows[0]) - futures.context, futures.seconds)
    ]
    width = row_label_width(times)
    col_labels = [label.replace(": ", "\n") for label in labels]
    return [
        image_grid([[row[t] for row in rows]], row_labels=[time], col_labels=col_labels, label_width=width)
        for t, time in enumerate(times)
    ]


def futures_picture(
    world: WorldModel,
    frames: torch.Tensor,
    timestamps: torch.Tensor,
    horizon: int,
    context: int | None = None,
    num_samples: int | None = None,
    heads: TaskHeads | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    animation: str | Path | None = None,
    fps: float = 2.0,
) -> np.ndarray:
    """Context | truth | K imagined futures of one clip in one call: `imagine_futures`, then `draw_futures`.

    Writes the picture to `out` (PNG) and the animation (`animate_futures`) to `animation` (.gif or .mp4) when given;
    returns the picture, uint8 (H, W, 3). The arguments before them are `imagine_futures`'.
    """
    if out is not None and Path(out).suffix.lower() != ".png":
        raise InputError(f"out {out} must end in .png")
    if animation is not None and Path(animation).suffix.lower() not in (".gif", ".mp4"):
        raise InputError(f"animation {animation} must end in .gif or .mp4")
    futures = imagine_futures(world, frames, timestamps, horizon, context, num_samples, heads, seed)
    picture = draw_futures(futures)
    if out is not None:
        save_png(out, picture)
    if animation is not None:
        save_animation(animation, animate_futures(futures), fps=fps)
    return picture
