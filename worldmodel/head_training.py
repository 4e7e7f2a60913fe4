"""Training task heads on frozen features: the linear probes (segmentation, depth) and the RGB head.

`train_heads` fits them on clip dicts through any feature function; train_heads.py runs it on a
tokenizer's frozen backbone over a dataset (`training_batches`, `new_rgb_head`). An RGB head
(features -> pixels) needs no labels: its target is the frame itself, so it can be fitted for any
tokenizer on any clips.

Rectangular frames are cut into two squares as the evaluation readers prescribe
(`tokenizer.data.squares`), so the heads see the same inputs in training and in
the rollout evaluation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from tokenizer.data.clip import IGNORE_INDEX
from tokenizer.data.squares import split_labelled
from tokenizer.model import Tokenizer
from tokenizer.released import DEPTH, SEGMENTATION
from tokenizer.runtime.errors import ConfigError, DataError, InputError, TrainingError
from worldmodel.heads import LABEL_KINDS, DepthHead, SegmentationHead, to_label_size
from worldmodel.rgb_head import RGBHead, RGBHeadConfig, pixel_target

# Keys of a clip dict given to `train_heads` beside its labels (keyed by LABEL_KINDS).
FRAMES_KEY = "frames"
# Optional clip-dict entry: how rectangular frames were cut into squares (tokenizer.data.squares).
SPLIT_KEY = "square_split"


@dataclass
class HeadsConfig:
    """Which heads train_heads.py fits on the frozen backbone's features (its `model` section)."""

    segmentation: bool = True  # train the linear segmentation probe
    depth: bool = True  # train the linear depth probe (binned, as the released depth-head-kitti)
    num_classes: int | None = None  # null = the data source's own class count
    min_depth: float = 1e-3  # depth head range in metres (KITTI's by default)
    max_depth: float = 80.0  # upper end of the depth range in metres
    # An RGB head (a ViT decoder from features to pixels, trained with an L1 pixel loss); its native image
    # size is the training frames' short side, and its patch the backbone's unless set.
    rgb: bool = False
    rgb_hidden_size: int = 128  # the RGB head's width
    rgb_num_layers: int = 2  # its transformer blocks
    rgb_num_heads: int = 4  # its attention heads
    rgb_mlp_size: int = 256  # its MLP hidden size
    # null = the backbone's patch size: one output patch per feature patch, frames' size out
    rgb_patch_size: int | None = None

    def validate(self) -> None:
        if not self.segmentation and not self.depth and not self.rgb:
            raise ConfigError("model.segmentation, model.depth and model.rgb are all false: nothing to train")
        if self.num_classes is not None and self.num_classes < 1:
            raise ConfigError(
                f"model.num_classes must be at least 1, or null for the data source's own, got {self.num_classes}"
            )


@dataclass
class HeadsTrainConfig:
    """How train_heads.py trains them (its `train` section; the keys are the training commands' own)."""

    max_steps: int = 300  # AdamW steps
    batch_size: int = 16  # clips per step
    lr: float = 1e-3  # the probes' learning rate
    rgb_lr: float = 1e-3  # the RGB head's learning rate
    threads: int | None = None  # torch CPU threads; null = PyTorch's default

    def validate(self) -> None:
        for key, value in (("max_steps", self.max_steps), ("batch_size", self.batch_size)):
            if value < 1:
                raise ConfigError(f"train.{key} must be at least 1, got {value}")


def _square_batches(loader: Iterable[Mapping[str, torch.Tensor]]) -> Iterator[dict]:
    """Clip batches with rectangular frames cut into squares and labels into matching halves."""
    for batch in loader:
        labels = {kind: batch[kind] for kind in LABEL_KINDS if kind in batch}
        frames, halves, split = split_labelled(batch[FRAMES_KEY], labels)
        yield {FRAMES_KEY: frames, **halves, **({SPLIT_KEY: split} if split is not None else {})}


def _training_ids(length: int, count: int, seed: int) -> list[int]:
    """`count` clip ids: 0..count-1 when the set is that large (Shapes is unbounded), else seeded shuffled passes."""
    if length >= count:
        return list(range(count))
    generator = torch.Generator().manual_seed(seed)
    passes = [torch.randperm(length, generator=generator) for _ in range(-(-count // length))]
    return torch.cat(passes)[:count].tolist()


def training_batches(dataset: Dataset, batch_size: int, steps: int, seed: int) -> Iterator[dict]:
    """`steps` batches of `batch_size` clips of `dataset` for `train_heads`, once each, rectangular frames as
    squares."""
    ids = _training_ids(len(dataset), steps * batch_size, seed)
    batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
    return _square_batches(DataLoader(dataset, batch_sampler=batches))


def new_rgb_head(tokenizer: Tokenizer, dataset: Dataset, options: HeadsConfig, seed: int) -> RGBHead:
    """An untrained RGB head for `tokenizer`'s features, native at the short side of `dataset`'s first frames."""
    patch = tokenizer.backbone.patch_size if options.rgb_patch_size is None else options.rgb_patch_size
    side = min(dataset[0][FRAMES_KEY].shape[-2:])
    if side < patch:
        raise ConfigError(f"model.rgb_patch_size {patch} is larger than the frames' short side {side}")
    sizes = RGBHeadConfig(
        hidden_size=options.rgb_hidden_size,
        num_layers=options.rgb_num_layers,
        num_heads=options.rgb_num_heads,
        mlp_size=options.rgb_mlp_size,
        patch_size=patch,
        image_size=side // patch * patch,
    )
    # Its own seeded stream: the linear probes draw their initial weights after it, and stay the same
    # whether or not an RGB head is trained beside them.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RGBHead(tokenizer.dim, tokenizer.backbone.feature_norm, sizes)


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
    rgb_head: RGBHead | None = None,
    rgb_lr: float | None = None,
) -> tuple[SegmentationHead | None, DepthHead | None, list[dict[str, float]]]:
    """Fit heads on frozen features; returns (seg head, depth head, per-step log), heads in eval mode.

    A segmentation head is trained when `num_classes` is given, a depth head when
    `min_depth` and `max_depth` are. `rgb_head`, when given, is trained in place (at
    `rgb_lr`, default `lr`) to give back each frame's pixels: unlike the probes it
    cannot be sized from the features alone (it needs the backbone's norm affine and
    an image size), so the caller builds it. Each clip dict holds `frames` uint8
    (B, T, 3, H, W) and optionally `segmentation` int (B, T, H', W') with 255 =
    unlabelled, `depth` float (B, T, H', W') in metres with 0 = no measurement, and
    `square_split` (a SquareSplit when B stacks the two squares of rectangular frames
    against label halves, as `training_batches` gives them); every frame of a clip is a sample. `feature_fn` maps frames
    (B, T, 3, H, W) to features (B, T, N, D), N = h * w of `grid` (or of `grid(frames)`
    when frame sizes vary).

    One optimiser step per batch holding at least one valid label (with an RGB head,
    every batch: its label is the frame itself); `batches` is iterated again when
    exhausted (a one-shot iterator then ends training early). BatchNorm statistics
    are learned alongside and frozen by the final eval().
    """
    if num_classes is None and (min_depth is None or max_depth is None) and rgb_head is None:
        raise InputError(
            "nothing to train: give num_classes for a segmentation head, min_depth and max_depth for a depth head, "
            "and/or an rgb_head"
        )
    if (min_depth is None) != (max_depth is None):
        raise InputError("a depth head needs both min_depth and max_depth")
    rgb_lr = lr if rgb_lr is None else rgb_lr
    if steps < 1 or lr <= 0 or rgb_lr <= 0:
        raise InputError(f"steps must be >= 1 and lr, rgb_lr > 0, got steps={steps}, lr={lr}, rgb_lr={rgb_lr}")
    device = torch.device(device)
    if rgb_head is not None:
        rgb_head.to(device).train()
    seg_head: SegmentationHead | None = None
    depth_head: DepthHead | None = None
    optimizer: torch.optim.Optimizer | None = None
    log: list[dict[str, float]] = []
    bar = tqdm(total=steps, desc="training heads", unit="step", dynamic_ncols=True, leave=False)

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
                    f"feature_fn must map frames {tuple(frames.shape)} to features (B, T, N, D), got "
                    f"{tuple(features.shape)}"
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
                probes = [p for h in (seg_head, depth_head) if h is not None for p in h.parameters()]
                groups = [{"params": probes, "lr": lr}] if probes else []
                if rgb_head is not None:
                    groups.append({"params": list(rgb_head.parameters()), "lr": rgb_lr})
                optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)

            losses: dict[str, torch.Tensor] = {}
            seg = _flat_labels(batch, SEGMENTATION, frames) if seg_head is not None else None
            if seg is not None:
                seg = seg.to(device).long()
                labelled = seg != IGNORE_INDEX
                if ((seg[labelled] < 0) | (seg[labelled] >= num_classes)).any():
                    raise InputError(
                        f"seg labels must lie in [0, {num_classes}) or be {IGNORE_INDEX}; got values "
                        f"{seg.unique().tolist()}"
                    )
                if labelled.any():
                    # Flattening (2B, T) keeps [first squares; second squares] in order, as the split expects.
                    logits = to_label_size(seg_head(features, frame_grid), seg.shape[-2:], split)
                    losses["seg_loss"] = F.cross_entropy(logits, seg, ignore_index=IGNORE_INDEX)
            depth = _flat_labels(batch, DEPTH, frames) if depth_head is not None else None
            if depth is not None:
                depth = depth.to(device).float()
                valid = depth > 0
                if valid.any():
                    pred = to_label_size(depth_head(features, frame_grid), depth.shape[-2:], split).squeeze(1)
                    losses["depth_loss"] = _silog_loss(pred[valid], depth[valid])
            if rgb_head is not None:
                pixels = rgb_head(features, frame_grid)
                # L1 rather than MSE: where the features leave a pixel's colour uncertain (a patch holding
                # an edge), MSE pulls it to the mean of the possible colours, a blur, while L1 picks their
                # median, which keeps the flat-coloured shapes' edges sharper.
                losses["rgb_loss"] = F.l1_loss(pixels, pixel_target(frames.flatten(0, 1), pixels.shape[-2:]))
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
            bar.update()
            if len(log) >= steps:
                break
        if not seen_any:
            break
        if not log:
            raise DataError(
                "no batch holds a valid label for the heads being trained (all seg 255, all depth 0, or keys missing)"
            )

    bar.close()
    if not log:
        raise DataError("the batches yielded nothing to train the heads on")
    if rgb_head is not None:
        rgb_head.eval()
    return (
        seg_head.eval() if seg_head is not None else None,
        depth_head.eval() if depth_head is not None else None,
        log,
    )
