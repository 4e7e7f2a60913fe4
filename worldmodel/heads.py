"""Task heads that read frozen patch features: segmentation logits, metric depth and RGB pixels.

The segmentation and depth heads are linear probes on the backbone's patch grid: BatchNorm2d then a
1x1 convolution. Their parameter names (`bn`, `head`) match the heads released
with the paper (Amazon-FAR/seg-head-vspw, seg-head-cityscapes, depth-head-kitti),
so those state dicts load unchanged:

    bn.weight, bn.bias, bn.running_mean, bn.running_var (D,), bn.num_batches_tracked ()
    head.weight (C, D, 1, 1), head.bias (C,)

Heads see features (..., N, D) with N = h * w patches in row-major order and
answer at patch resolution (..., C, h, w); `to_label_size` brings that to label
size with bilinear interpolation, as the paper's evaluation does, and is the one
place predictions are brought there (`predict`, `TaskHeads.predict`, training).

The RGB head (`worldmodel.rgb_head.RGBHead`, kind "rgb") is a small ViT decoder
from the features to pixels, laid out like the released rgb-head-imagenet; it
also needs the backbone's final LayerNorm affine (`Backbone.feature_norm`),
which no file holds, so every loader of an RGB head takes it as `feature_norm`.

Our own heads are saved as a folder: `weights.safetensors` (the released key
layout) + `head.json` (kind and sizes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tokenizer.data.kitti import MAX_DEPTH_M, MIN_DEPTH_M
from tokenizer.data.squares import SquareSplit
from tokenizer.model import Tokenizer
from tokenizer.released import DEPTH, RELEASED_FILE, RGB, SEGMENTATION, ReleasedModel, released_model
from tokenizer.runtime.errors import CheckpointError, InputError
from tokenizer.runtime.files import atomic_write_text, load_module_weights, load_weights, save_safetensors
from tokenizer.runtime.hub import is_repo_id, push_folder, resolve
from worldmodel.feature_maps import features_to_map
from worldmodel.rgb_head import RGBHead, RGBHeadConfig

log = logging.getLogger(__name__)

KINDS = (SEGMENTATION, DEPTH, RGB)
# The kinds scored against labels; a clip dict holds those labels under the same names (tokenizer.data.clip).
LABEL_KINDS = (SEGMENTATION, DEPTH)
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "head.json"


def _apply(fn: Callable[[torch.Tensor], torch.Tensor], features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Run a map-to-map module on features with any leading dims: (*, N, D) -> (*, C, h, w)."""
    if features.ndim < 3:
        raise InputError(f"features must have shape (..., N, D), got {tuple(features.shape)}")
    lead = features.shape[:-2]
    out = fn(features_to_map(features.reshape(-1, *features.shape[-2:]), grid))
    return out.reshape(*lead, *out.shape[1:])


def to_label_size(maps: torch.Tensor, size: tuple[int, int], split: SquareSplit | None = None) -> torch.Tensor:
    """Patch-resolution maps (*, C, h, w) -> (*, C, H_l, W_l) over their labels, by bilinear interpolation.

    With the `split` of rectangular frames cut into overlapping squares (tokenizer.data.squares), maps are
    (2B, C, h, w), [first squares; second squares], and `size` is that of the label halves: each square is
    resized to a square of side max(H_l, W_l) in label pixels and the part over its own half is kept. Without
    overlap each square maps onto its whole half, which is a plain resize.
    """
    if maps.ndim < 3:
        raise InputError(f"maps must have shape (..., C, h, w), got {tuple(maps.shape)}")
    half_h, half_w = size
    if split is not None and split.overlap:
        if maps.ndim != 4:
            raise InputError(f"maps of split frames must have shape (2B, C, h, w), got {tuple(maps.shape)}")
        side = max(half_h, half_w)
        up = F.interpolate(maps, size=(side, side), mode="bilinear", align_corners=False)
        count = maps.shape[0] // 2
        first = up[:count, :, :half_h, :half_w]
        # The second square ends where the frame ends, so its half sits at the square's far end.
        second = up[count:, :, side - half_h :, side - half_w :]
        return torch.cat([first, second], dim=0)
    lead = maps.shape[:-3]
    flat = maps.reshape(-1, *maps.shape[-3:])
    out = F.interpolate(flat, size=(half_h, half_w), mode="bilinear", align_corners=False)
    return out.reshape(*lead, *out.shape[1:])


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
    def predict(
        self, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], split: SquareSplit | None = None
    ) -> torch.Tensor:
        """(*, N, D) -> class ids (*, H, W): logits brought to label size (`to_label_size`), then argmax."""
        return to_label_size(self(features, grid), size, split).argmax(-3)

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "in_dim": self.in_dim,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }


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
    def __init__(
        self, in_dim: int, min_depth: float = MIN_DEPTH_M, max_depth: float = MAX_DEPTH_M, num_bins: int = 256
    ):
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
    def predict(
        self, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], split: SquareSplit | None = None
    ) -> torch.Tensor:
        """(*, N, D) -> depth (*, H, W), brought to label size (`to_label_size`)."""
        return to_label_size(self(features, grid), size, split).squeeze(-3)

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "in_dim": self.in_dim,
            "min_depth": self.min_depth,
            "max_depth": self.max_depth,
            "num_bins": self.num_bins,
        }


Head = SegmentationHead | DepthHead | RGBHead
FeatureNorm = tuple[torch.Tensor, torch.Tensor]  # the backbone's final LayerNorm (weight, bias), each (D,)


def save_head(head: Head, folder: str | Path) -> None:
    """Write `folder/weights.safetensors` and `folder/head.json` (kind, sizes, depth range, class names, RGB sizes)."""
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
    if not isinstance(config, dict) or config.get("kind") not in KINDS:
        raise CheckpointError(f"{path} must be a JSON object whose kind is one of {', '.join(map(repr, KINDS))}")
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


def _config_error(folder: Path, err: Exception) -> CheckpointError:
    return CheckpointError(f"{folder / CONFIG_FILE} lacks or mistypes a field ({err!r})")


def _rgb_from_config(config: Mapping, feature_norm: FeatureNorm, folder: Path) -> RGBHead:
    """An untrained RGB head sized by a head.json."""
    try:
        sizes = RGBHeadConfig(**{name: int(config[name]) for name in RGBHeadConfig.__dataclass_fields__})
        sizes.validate()
        in_dim, mean, std = (
            int(config["in_dim"]),
            [float(v) for v in config["image_mean"]],
            [float(v) for v in config["image_std"]],
        )
    except (KeyError, TypeError, ValueError, InputError) as err:
        raise _config_error(folder, err) from None
    return RGBHead(in_dim, feature_norm, sizes, mean, std)


def _require_norm(feature_norm: FeatureNorm | None, what: str) -> FeatureNorm:
    if feature_norm is None:
        raise InputError(
            f"{what} is an RGB head, which needs the backbone's final LayerNorm affine: "
            "pass feature_norm=tokenizer.backbone.feature_norm"
        )
    return feature_norm


def _check_file_kind(state: Mapping[str, torch.Tensor], kind: str, what: str) -> None:
    """A bare file of the other family (RGB decoder vs linear probe) gets one clear sentence, not a key list."""
    decoder, probe = "decoder_embed.weight" in state, "head.weight" in state
    if kind == RGB and probe and not decoder:
        raise CheckpointError(f"{what} holds a linear-probe head (bn.*, head.*), not an RGB head; pass its kind")
    if kind != RGB and decoder and not probe:
        raise CheckpointError(f"{what} holds an RGB head (decoder_*), not a {kind} head; pass kind={RGB!r}")


def load_head(
    path: str | Path,
    kind: str | None = None,
    in_dim: int | None = None,
    num_classes: int | None = None,
    num_bins: int | None = None,
    min_depth: float = MIN_DEPTH_M,
    max_depth: float = MAX_DEPTH_M,
    feature_norm: FeatureNorm | None = None,
    rgb_config: RGBHeadConfig | None = None,
) -> Head:
    """Load a head in eval mode from one of our folders or from a released state-dict file.

    A folder written by `save_head` carries its own config; `kind` and `in_dim`,
    when given, are checked against it. A file (.safetensors, .bin, .pt) is a bare
    state dict and needs `kind`; its sizes (in_dim, num_classes or num_bins) are read
    from `head.weight` unless given, and a depth head's range is `min_depth`/`max_depth`
    (KITTI's by default, as for the released depth-head-kitti). An RGB head, folder or
    file, needs `feature_norm`, the backbone's final LayerNorm (weight, bias); a bare
    RGB file is sized by `rgb_config` (default: the released rgb-head-imagenet's sizes)
    and reads `in_dim` from `decoder_embed.weight` unless given. Any missing, unexpected or
    mis-shaped key raises CheckpointError naming it.
    """
    path = Path(path)
    if kind is not None and kind not in KINDS:
        raise InputError(f"head kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    if path.is_dir():
        config = _read_config(path)
        if kind is not None and config["kind"] != kind:
            raise CheckpointError(f"head folder {path} holds a {config['kind']} head, not a {kind} head")
        if in_dim is not None and config.get("in_dim") != in_dim:
            raise CheckpointError(
                f"head folder {path} reads {config.get('in_dim')}-dim features, not {in_dim}-dim ones"
            )
        what = f"{config['kind']} head {path}"
        if config["kind"] == RGB:
            head: Head = _rgb_from_config(config, _require_norm(feature_norm, what), path)
        else:
            try:
                if config["kind"] == SEGMENTATION:
                    head = SegmentationHead(
                        int(config["in_dim"]), int(config["num_classes"]), config.get("class_names")
                    )
                else:
                    head = DepthHead(
                        int(config["in_dim"]),
                        float(config["min_depth"]),
                        float(config["max_depth"]),
                        int(config["num_bins"]),
                    )
            except (KeyError, TypeError, ValueError, InputError) as err:
                raise _config_error(path, err) from None
        state = load_weights(path / WEIGHTS_FILE, what)
    else:
        what = f"{kind or 'task'} head file {path}"
        state = load_weights(path, what)
        if kind is None:
            raise InputError(
                f"{path} is a bare weights file; say whether it is a {SEGMENTATION!r}, {DEPTH!r} or {RGB!r} head"
            )
        _check_file_kind(state, kind, what)
        if kind == RGB:
            norm = _require_norm(feature_norm, what)
            embed = _shape_of(state, "decoder_embed.weight", 2)
            if in_dim is None and embed is None:
                raise CheckpointError(
                    f"{what} has no decoder_embed.weight (W, D) to read the feature width from; pass in_dim"
                )
            head = RGBHead(in_dim if in_dim is not None else embed[1], norm, rgb_config)
        else:
            num_outputs = num_classes if kind == SEGMENTATION else num_bins
            head = _build_from_state(state, kind, in_dim, num_outputs, min_depth, max_depth, what)
    if isinstance(head, RGBHead):
        state = head.with_position_table(state)
    else:
        state = dict(state)
        # BatchNorm's step counter only matters with momentum=None, which these heads do not use;
        # tolerate state dicts saved without it rather than reject otherwise good weights.
        state.setdefault("bn.num_batches_tracked", torch.zeros((), dtype=torch.long))
    load_module_weights(head, state, what)
    return head.eval()


@dataclass
class TaskHeads:
    """The heads a run uses together, saved as `<folder>/segmentation/`, `<folder>/depth/` and `<folder>/rgb/` (any may
    be absent)."""

    segmentation: SegmentationHead | None = None
    depth: DepthHead | None = None
    rgb: RGBHead | None = None

    def __post_init__(self) -> None:
        if self.segmentation is None and self.depth is None and self.rgb is None:
            raise InputError("TaskHeads needs at least one head: segmentation, depth or RGB")

    def items(self) -> list[tuple[str, Head]]:
        heads = ((SEGMENTATION, self.segmentation), (DEPTH, self.depth), (RGB, self.rgb))
        return [(kind, head) for kind, head in heads if head is not None]

    def predict(
        self, features: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], split: SquareSplit | None = None
    ) -> dict[str, torch.Tensor]:
        """Features (M, N, D) -> {"segmentation": class ids, "depth": metres}, each (M, H_l, W_l) at label size.

        Keyed like a clip dict's labels, for the heads present; the RGB head answers with pixels, not labels
        (`RGBHead.render`). With a `split`, M stacks the squares of rectangular frames (`to_label_size`).
        """
        features = features.float()
        heads = ((SEGMENTATION, self.segmentation), (DEPTH, self.depth))
        return {kind: head.predict(features, grid, size, split) for kind, head in heads if head is not None}

    def to(self, device: str | torch.device) -> TaskHeads:
        for _, head in self.items():
            head.to(device)
        return self

    def save(self, folder: str | Path) -> None:
        for kind, head in self.items():
            save_head(head, Path(folder) / kind)

    def push_to_hub(
        self, repo_id: str, private: bool | None = None, token: str | None = None, commit_message: str | None = None
    ) -> str:
        """Upload the `save` folder as model repo `repo_id`; `load_heads(repo_id, tokenizer)` loads it back."""
        return push_folder(self.save, repo_id, "task heads", private, token, commit_message=commit_message)

    @classmethod
    def load(cls, folder: str | Path, in_dim: int | None = None, feature_norm: FeatureNorm | None = None) -> TaskHeads:
        """Load whichever of `folder/segmentation`, `folder/depth` and `folder/rgb` exist; at least one must.

        `rgb/` is loaded only with `feature_norm` (the backbone's final LayerNorm (weight, bias)), which it
        cannot run without; callers that read segmentation or depth alone need not pass it.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(
                f"heads folder {folder} does not exist; train heads with train_heads.py or pass --heads"
            )
        kinds = [kind for kind in KINDS if (folder / kind).is_dir()]
        if kinds == [RGB] and feature_norm is None:
            _require_norm(feature_norm, f"the only head in {folder}")
        found = {
            kind: load_head(folder / kind, kind, in_dim, feature_norm=feature_norm)
            for kind in kinds
            if kind != RGB or feature_norm is not None
        }
        if not found:
            raise CheckpointError(f"heads folder {folder} holds none of {', '.join(f'{kind}/' for kind in KINDS)}")
        return cls(found.get(SEGMENTATION), found.get(DEPTH), found.get(RGB))


def _released_head(model: ReleasedModel, path: Path, in_dim: int | None, feature_norm: FeatureNorm | None) -> Head:
    """A released head file, sized by the table (tokenizer.released)."""
    weights = path / model.filename if path.is_dir() else path
    config = model.config
    if model.kind == SEGMENTATION:
        return load_head(weights, SEGMENTATION, in_dim, num_classes=config["num_classes"])
    if model.kind == DEPTH:
        return load_head(
            weights,
            DEPTH,
            in_dim,
            num_bins=config["num_bins"],
            min_depth=config["min_depth"],
            max_depth=config["max_depth"],
        )
    return load_head(
        weights,
        RGB,
        in_dim,
        feature_norm=_require_norm(feature_norm, model.repo_id),
        rgb_config=RGBHeadConfig(**config),
    )


def load_heads(
    sources: str | Path | Sequence[str | Path],
    tokenizer: Tokenizer | None = None,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
) -> TaskHeads:
    """One TaskHeads from one or more sources, at most one head of each kind, in eval mode.

    Each source is a heads folder (`segmentation/`, `depth/`, `rgb/`: train_heads.py's output), one head's
    folder (`head.json`), a released id such as `Amazon-FAR/seg-head-vspw` or a local copy of one (its
    kind and sizes from tokenizer.released), a Hub repo holding either folder, or `KIND:FILE` for a bare
    state-dict file (KIND: segmentation, depth or rgb). `tokenizer` is the one whose features the heads
    read: its width is checked, its backbone's final norm is what an RGB head undoes, and its device is where
    the heads go unless `device` says otherwise. `revision` and `cache_dir` are the Hub's, for every id among `sources`.
    """
    sources = [sources] if isinstance(sources, (str, Path)) else list(sources)
    in_dim = tokenizer.dim if tokenizer is not None else None
    feature_norm = tokenizer.backbone.feature_norm if tokenizer is not None else None
    if device is None and tokenizer is not None:
        device = next(tokenizer.parameters()).device
    found: dict[str, Head] = {}
    for source in sources:
        kind, sep, file = str(source).partition(":")
        if sep and kind in KINDS:
            path = resolve(file, f"{kind} head", revision, cache_dir)
            # A folder without head.json is a release's copy (or snapshot): its one state-dict file.
            if path.is_dir() and not (path / CONFIG_FILE).is_file():
                path = path / RELEASED_FILE
            loaded = {kind: load_head(path, kind, in_dim, feature_norm=feature_norm)}
        elif sep and kind.isidentifier() and not Path(source).exists():
            raise InputError(f"{source}: {kind!r} is not a head kind; KIND:FILE takes one of {', '.join(KINDS)}")
        elif (model := released_model(source)) is not None:
            if model.kind not in KINDS:
                raise CheckpointError(
                    f"{source} is the released {model.kind.replace('_', ' ')} {model.repo_id}, not a task head"
                )
            # A backbone given as a local folder cannot be compared by name; one given by id can.
            if (
                tokenizer is not None
                and is_repo_id(tokenizer.backbone.name)
                and tokenizer.backbone.name != model.backbone
            ):
                log.warning(
                    "%s was trained on %s features; this tokenizer's backbone is %s",
                    model.repo_id,
                    model.backbone,
                    tokenizer.backbone.name,
                )
            path = resolve(source, f"{model.kind} head", revision, cache_dir)
            loaded = {model.kind: _released_head(model, path, in_dim, feature_norm)}
        else:
            path = resolve(source, "heads", revision, cache_dir)
            if path.is_dir() and (path / CONFIG_FILE).is_file():
                head = load_head(path, None, in_dim, feature_norm=feature_norm)
                loaded = {_read_config(path)["kind"]: head}
            elif path.is_dir():
                loaded = dict(TaskHeads.load(path, in_dim, feature_norm).items())
            else:
                raise InputError(
                    f"{source} is a bare weights file: name its kind, e.g. segmentation:{source} (or depth:, rgb:)"
                )
        for kind, head in loaded.items():
            if kind in found:
                raise InputError(
                    f"two {kind} heads among {', '.join(map(str, sources))}: give one of each kind at most"
                )
            found[kind] = head
    if not found:
        raise InputError("no heads given")
    heads = TaskHeads(found.get(SEGMENTATION), found.get(DEPTH), found.get(RGB))
    return heads.to(device) if device is not None else heads
