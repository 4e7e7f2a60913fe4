"""Task heads that read frozen patch features: segmentation logits and metric depth.

Both heads are linear probes on the backbone's patch grid: BatchNorm2d then a
1x1 convolution. Their parameter names (`bn`, `head`) match the heads released
with the paper (Amazon-FAR/seg-head-vspw, seg-head-cityscapes, depth-head-kitti),
so those state dicts load unchanged:

    bn.weight, bn.bias, bn.running_mean, bn.running_var (D,), bn.num_batches_tracked ()
    head.weight (C, D, 1, 1), head.bias (C,)

Heads see features (..., N, D) with N = h * w patches in row-major order and
answer at patch resolution (..., C, h, w); `upsample_to` brings that to label
size with bilinear interpolation, as the paper's evaluation does.

Our own heads are saved as a folder: `weights.safetensors` + `head.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.data.clip import IGNORE_INDEX
from tokenizer.data.kitti import MAX_DEPTH_M, MIN_DEPTH_M
from tokenizer.data.squares import SquareSplit, upsample_to_labels
from tokenizer.runtime.errors import CheckpointError, DataError, InputError, TrainingError
from tokenizer.runtime.files import atomic_write_text, load_module_weights, load_weights, save_safetensors

SEGMENTATION = "segmentation"
DEPTH = "depth"
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "head.json"
# Keys of a clip dict given to `train_heads`.
FRAMES_KEY = "frames"
SEG_KEY = "segmentation"
DEPTH_KEY = "depth"
# Optional clip-dict entry: how rectangular frames were cut into squares (tokenizer.data.squares).
SPLIT_KEY = "square_split"


def features_to_map(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch features (B, N, D), N = h * w row-major -> feature map (B, D, h, w)."""
    h, w = grid
    if features.ndim != 3 or features.shape[1] != h * w:
        raise InputError(
            f"features must have shape (B, N, D) with N = {h}*{w} = {h * w} patches, got {tuple(features.shape)}"
        )
    return features.transpose(1, 2).reshape(features.shape[0], features.shape[2], h, w)


def _apply(fn: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Run a map-to-map module on features with any leading dims: (*, N, D) -> (*, C, h, w)."""
    if features.ndim < 3:
        raise InputError(f"features must have shape (..., N, D), got {tuple(features.shape)}")
    lead = features.shape[:-2]
    out = fn(features_to_map(features.reshape(-1, *features.shape[-2:]), grid))
    return out.reshape(*lead, *out.shape[1:])


def upsample_to(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of the last two dims: (*, C, h, w) -> (*, C, H, W)."""
    if maps.ndim < 3:
        raise InputError(f"maps must have shape (..., C, h, w), got {tuple(maps.shape)}")
    lead = maps.shape[:-3]
    flat = maps.reshape(-1, *maps.shape[-3:])
    out = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
    return out.reshape(*lead, *out.shape[1:])


def to_label_size(maps: torch.Tensor, size: tuple[int, int], split: SquareSplit | None = None) -> torch.Tensor:
    """Patch-resolution maps (M, C, h, w) -> (M, C, H_l, W_l) over their labels.

    With a `split` of rectangular frames, M stacks [first squares; second squares]
    and each square lands on its own label half (`upsample_to_labels`).
    """
    if split is not None and split.is_wide is not None:
        return upsample_to_labels(maps, tuple(size), split)
    return upsample_to(maps, size)


class SegmentationHead(nn.Module):
    """BatchNorm2d + 1x1 conv: patch features (*, N, D) -> class logits (*, C, h, w)."""

    kind = SEGMENTATION

    def __init__(self, in_dim: int, num_classes: int, class_names: list[str] | None = None):
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise InputError(f"{len(class_names)} class names given for {num_classes} classes")
        self.in_dim = in_dim
        self.num_classes = num_classes
        self.class_names = class_names
        self.bn = nn.BatchNorm2d(in_dim)
        self.head = nn.Conv2d(in_dim, num_classes, 1)

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(x))

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(*, N, D) -> logits (*, C, h, w)."""
        return _apply(self._map, features, grid)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """(*, N, D) -> class ids (*, H, W): logits upsampled to label size, then argmax."""
        return upsample_to(self(features, grid), size).argmax(-3)

    def config(self) -> dict:
        return {"kind": self.kind, "in_dim": self.in_dim, "num_classes": self.num_classes, "class_names": self.class_names}


class DepthHead(nn.Module):
    """BatchNorm2d + 1x1 conv to depth bins: patch features (*, N, D) -> depth in metres (*, 1, h, w).

    The bin scores go through ReLU plus a constant, are normalised over bins and
    average the bin centres linspace(min_depth, max_depth, num_bins), so depth
    always lies in [min_depth, max_depth].
    """

    kind = DEPTH
    # Added after ReLU so no bin has zero weight and the normaliser is never zero (the released head's value).
    eps = 0.1

    # The default range is KITTI's evaluation range (Eigen split, Garg crop), the one the released head was trained for.
    def __init__(self, in_dim: int, min_depth: float = MIN_DEPTH_M, max_depth: float = MAX_DEPTH_M, num_bins: int = 256):
        super().__init__()
        if not 0 <= min_depth < max_depth:
            raise InputError(f"depth range must satisfy 0 <= min_depth < max_depth, got [{min_depth}, {max_depth}]")
        self.in_dim = in_dim
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.num_bins = num_bins
        self.bn = nn.BatchNorm2d(in_dim)
        self.head = nn.Conv2d(in_dim, num_bins, 1)
        # Not persistent: the released state dicts hold only bn.* and head.*.
        self.register_buffer("bins", torch.linspace(self.min_depth, self.max_depth, num_bins), persistent=False)

    def _map(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.relu(self.head(self.bn(x))) + self.eps
        weights = weights / weights.sum(1, keepdim=True)
        return torch.einsum("bkhw,k->bhw", weights, self.bins.to(weights.dtype)).unsqueeze(1)

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(*, N, D) -> depth (*, 1, h, w)."""
        return _apply(self._map, features, grid)

    @torch.no_grad()
    def predict(self, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """(*, N, D) -> depth (*, H, W), upsampled to label size."""
        return upsample_to(self(features, grid), size).squeeze(-3)

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "in_dim": self.in_dim,
            "min_depth": self.min_depth,
            "max_depth": self.max_depth,
            "num_bins": self.num_bins,
        }


Head = SegmentationHead | DepthHead


def save_head(head: Head, folder: str | Path) -> None:
    """Write `folder/weights.safetensors` and `folder/head.json` (kind, sizes, depth range, class names)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"cannot save a head to {folder}: it exists and is not a folder")
    save_safetensors(head.state_dict(), folder / WEIGHTS_FILE)
    atomic_write_text(folder / CONFIG_FILE, json.dumps(head.config(), indent=2) + "\n")


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"head folder {folder} has no {CONFIG_FILE}; pass a weights file and its kind instead")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict) or config.get("kind") not in (SEGMENTATION, DEPTH):
        raise CheckpointError(f"{path} must be a JSON object whose kind is {SEGMENTATION!r} or {DEPTH!r}")
    return config


def _shape_of(state: Mapping[str, torch.Tensor], key: str, ndim: int) -> tuple[int, ...] | None:
    """The shape of `state[key]` when it is there with the expected rank (for inferring sizes)."""
    value = state.get(key)
    return tuple(value.shape) if value is not None and value.ndim == ndim else None


def _build_from_state(
    state: Mapping[str, torch.Tensor],
    kind: str,
    in_dim: int | None,
    num_outputs: int | None,
    min_depth: float,
    max_depth: float,
    what: str,
) -> Head:
    """A head sized by the caller where given, else by the file's own shapes."""
    head_shape = _shape_of(state, "head.weight", 4)
    bn_shape = _shape_of(state, "bn.weight", 1)
    if in_dim is None:
        in_dim = head_shape[1] if head_shape else bn_shape[0] if bn_shape else None
    outputs = num_outputs if num_outputs is not None else head_shape[0] if head_shape else None
    if in_dim is None or outputs is None:
        raise CheckpointError(
            f"{what} has no usable head.weight (C, D, 1, 1) or bn.weight (D,) to size the {kind} head from "
            f"(keys {sorted(state)}); pass in_dim and num_classes / num_bins"
        )
    if kind == SEGMENTATION:
        return SegmentationHead(in_dim, outputs)
    return DepthHead(in_dim, min_depth, max_depth, num_bins=outputs)


def load_head(
    path: str | Path,
    kind: str | None = None,
    in_dim: int | None = None,
    num_classes: int | None = None,
    num_bins: int | None = None,
    min_depth: float = MIN_DEPTH_M,
    max_depth: float = MAX_DEPTH_M,
) -> Head:
    """Load a head in eval mode from one of our folders or from a released state-dict file.

    A folder written by `save_head` carries its own config; `kind` and `in_dim`,
    when given, are checked against it. A file (.safetensors, .bin, .pt) is a bare
    state dict and needs `kind`; its sizes (in_dim, num_classes or num_bins) are read
    from `head.weight` unless given, and a depth head's range is `min_depth`/`max_depth`
    (KITTI's by default, as for the released depth-head-kitti). Any missing, unexpected or
    mis-shaped key raises CheckpointError naming it.
    """
    path = Path(path)
    if kind is not None and kind not in (SEGMENTATION, DEPTH):
        raise InputError(f"head kind must be {SEGMENTATION!r} or {DEPTH!r}, got {kind!r}")
    if path.is_dir():
        config = _read_config(path)
        if kind is not None and config["kind"] != kind:
            raise CheckpointError(f"head folder {path} holds a {config['kind']} head, not a {kind} head")
        if in_dim is not None and config.get("in_dim") != in_dim:
            raise CheckpointError(f"head folder {path} reads {config.get('in_dim')}-dim features, not {in_dim}-dim ones")
        try:
            if config["kind"] == SEGMENTATION:
                head: Head = SegmentationHead(int(config["in_dim"]), int(config["num_classes"]), config.get("class_names"))
            else:
                head = DepthHead(
                    int(config["in_dim"]), float(config["min_depth"]), float(config["max_depth"]), int(config["num_bins"])
                )
        except (KeyError, TypeError, ValueError, InputError) as err:
            raise CheckpointError(f"{path / CONFIG_FILE} lacks or mistypes a field ({err!r})") from None
        what = f"{config['kind']} head {path}"
        state = load_weights(path / WEIGHTS_FILE, what)
    else:
        what = f"{kind or 'task'} head file {path}"
        state = load_weights(path, what)
        if kind is None:
            raise InputError(f"{path} is a bare weights file; say whether it is a {SEGMENTATION!r} or a {DEPTH!r} head")
        num_outputs = num_classes if kind == SEGMENTATION else num_bins
        head = _build_from_state(state, kind, in_dim, num_outputs, min_depth, max_depth, what)
    state = dict(state)
    # BatchNorm's step counter only matters with momentum=None, which these heads do not use;
    # tolerate state dicts saved without it rather than reject otherwise good weights.
    state.setdefault("bn.num_batches_tracked", torch.zeros((), dtype=torch.long))
    load_module_weights(head, state, what)
    return head.eval()


@dataclass
class TaskHeads:
    """The heads a run uses together, saved as `<folder>/segmentation/` and `<folder>/depth/` (either may be absent)."""

    segmentation: SegmentationHead | None = None
    depth: DepthHead | None = None

    def __post_init__(self) -> None:
        if self.segmentation is None and self.depth is None:
            raise InputError("TaskHeads needs a segmentation head, a depth head, or both")

    def items(self) -> list[tuple[str, Head]]:
        return [(kind, head) for kind, head in ((SEGMENTATION, self.segmentation), (DEPTH, self.depth)) if head is not None]

    def to(self, device: str | torch.device) -> "TaskHeads":
        for _, head in self.items():
            head.to(device)
        return self

    def save(self, folder: str | Path) -> None:
        for kind, head in self.items():
            save_head(head, Path(folder) / kind)

    @classmethod
    def load(cls, folder: str | Path, in_dim: int | None = None) -> "TaskHeads":
        """Load whichever of `folder/segmentation` and `folder/depth` exist; at least one must."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"heads folder {folder} does not exist; train heads with train_heads.py or pass --heads")
        found = {kind: load_head(folder / kind, kind, in_dim) for kind in (SEGMENTATION, DEPTH) if (folder / kind).is_dir()}
        if not found:
            raise CheckpointError(f"heads folder {folder} holds neither {SEGMENTATION}/ nor {DEPTH}/")
        return cls(found.get(SEGMENTATION), found.get(DEPTH))


def _silog_loss(pred: torch.Tensor, target: torch.Tensor, variance_focus: float = 0.85) -> torch.Tensor:
    """Scale-invariant log loss (Eigen et al.) over matching valid pixels, both (M,).

    Chosen over L1/L2 in metres because KITTI depth spans 1-80 m: an error in log
    space weighs near and far pixels alike, whereas L2 in metres is dominated by the
    few far ones. With variance_focus < 1 the global scale is still penalised, so the
    head learns metric depth, which the RMSE metric needs.
    """
    diff = torch.log(pred.clamp_min(1e-6)) - torch.log(target)
    # The small constant keeps the square root's gradient finite at a perfect fit.
    return torch.sqrt((diff.pow(2).mean() - variance_focus * diff.mean().pow(2)).clamp_min(0) + 1e-8)


def _flat_labels(batch: Mapping, key: str, frames: torch.Tensor) -> torch.Tensor | None:
    """Labels (B, T, H, W) of a clip dict flattened to (B*T, H, W), or None when absent."""
    labels = batch.get(key)
    if labels is None:
        return None
    if labels.ndim != 4 or tuple(labels.shape[:2]) != tuple(frames.shape[:2]):
        raise InputError(
            f"clip {key!r} labels must have shape (B, T, H, W) = ({frames.shape[0]}, {frames.shape[1]}, H, W), "
            f"got {tuple(labels.shape)}"
        )
    return labels.flatten(0, 1)


def train_heads(
    feature_fn: Callable[[torch.Tensor], torch.Tensor],
    batches: Iterable[Mapping[str, torch.Tensor]],
    grid: tuple[int, int] | Callable[[torch.Tensor], tuple[int, int]],
    num_classes: int | None = None,
    min_depth: float | None = None,
    max_depth: float | None = None,
    steps: int = 500,
    lr: float = 1e-3,
    device: str | torch.device = "cpu",
    class_names: list[str] | None = None,
) -> tuple[SegmentationHead | None, DepthHead | None, list[dict[str, float]]]:
    """Fit linear-probe heads on frozen features; returns (seg head, depth head, per-step log), heads in eval mode.

    A segmentation head is trained when `num_classes` is given, a depth head when
    `min_depth` and `max_depth` are. Each clip dict holds `frames` uint8 (B, T, 3, H, W)
    and optionally `segmentation` int (B, T, H', W') with 255 = unlabelled, `depth` float
    (B, T, H', W') in metres with 0 = no measurement, and `square_split` (a SquareSplit
    when B stacks the two squares of rectangular frames against label halves); every
    frame of a clip is a sample. `feature_fn` maps frames (B, T, 3, H, W) to features
    (B, T, N, D), N = h * w of `grid` (or of `grid(frames)` when frame sizes vary).

    One optimiser step per batch holding at least one valid label; `batches` is
    iterated again when exhausted (a one-shot iterator then ends training early).
    BatchNorm statistics are learned alongside and frozen by the final eval().
    """
    if num_classes is None and (min_depth is None or max_depth is None):
        raise InputError(
            "nothing to train: give num_classes for a segmentation head and/or min_depth and max_depth for a depth head"
        )
    if (min_depth is None) != (max_depth is None):
        raise InputError("a depth head needs both min_depth and max_depth")
    if steps < 1 or lr <= 0:
        raise InputError(f"steps must be >= 1 and lr > 0, got steps={steps}, lr={lr}")
    device = torch.device(device)
    seg_head: SegmentationHead | None = None
    depth_head: DepthHead | None = None
    optimizer: torch.optim.Optimizer | None = None
    log: list[dict[str, float]] = []

    while len(log) < steps:
        seen_any = False
        for batch in batches:
            seen_any = True
            if FRAMES_KEY not in batch:
                raise InputError(f"clip dicts must hold {FRAMES_KEY!r} (B, T, 3, H, W); got keys {sorted(batch)}")
            frames = batch[FRAMES_KEY].to(device)
            with torch.no_grad():
                features = feature_fn(frames)
            if features.ndim != 4 or tuple(features.shape[:2]) != tuple(frames.shape[:2]):
                raise InputError(
                    f"feature_fn must map frames {tuple(frames.shape)} to features (B, T, N, D), got {tuple(features.shape)}"
                )
            features = features.flatten(0, 1).float()
            frame_grid = grid(frames) if callable(grid) else grid
            split = batch.get(SPLIT_KEY)
            if optimizer is None:
                # Heads are built lazily: the feature width is known only once the backbone has run.
                in_dim = features.shape[-1]
                if num_classes is not None:
                    seg_head = SegmentationHead(in_dim, num_classes, class_names).to(device).train()
                if min_depth is not None and max_depth is not None:
                    depth_head = DepthHead(in_dim, min_depth, max_depth).to(device).train()
                params = [p for h in (seg_head, depth_head) if h is not None for p in h.parameters()]
                optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)

            losses: dict[str, torch.Tensor] = {}
            seg = _flat_labels(batch, SEG_KEY, frames) if seg_head is not None else None
            if seg is not None:
                seg = seg.to(device).long()
                labelled = seg != IGNORE_INDEX
                if ((seg[labelled] < 0) | (seg[labelled] >= num_classes)).any():
                    raise InputError(f"seg labels must lie in [0, {num_classes}) or be {IGNORE_INDEX}; got values {seg.unique().tolist()}")
                if labelled.any():
                    # Flattening (2B, T) keeps [first squares; second squares] in order, as the split expects.
                    logits = to_label_size(seg_head(features, frame_grid), seg.shape[-2:], split)
                    losses["seg_loss"] = F.cross_entropy(logits, seg, ignore_index=IGNORE_INDEX)
            depth = _flat_labels(batch, DEPTH_KEY, frames) if depth_head is not None else None
            if depth is not None:
                depth = depth.to(device).float()
                valid = depth > 0
                if valid.any():
                    pred = to_label_size(depth_head(features, frame_grid), depth.shape[-2:], split).squeeze(1)
                    losses["depth_loss"] = _silog_loss(pred[valid], depth[valid])
            if not losses:
                continue

            total = sum(losses.values())
            if not torch.isfinite(total):
                values = ", ".join(f"{k}={v.item()}" for k, v in losses.items())
                raise TrainingError(f"head training loss became non-finite at step {len(log)} ({values}); lower lr")
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            log.append({"step": len(log), **{k: v.item() for k, v in losses.items()}})
            if len(log) >= steps:
                break
        if not seen_any:
            break
        if not log:
            raise DataError("no batch holds a valid label for the heads being trained (all seg 255, all depth 0, or keys missing)")

    if not log:
        raise DataError("the batches yielded nothing to train the heads on")
    return (
        seg_head.eval() if seg_head is not None else None,
        depth_head.eval() if depth_head is not None else None,
        log,
    )
