"""The models released with the paper, by Hub id: what each one is and the config it was trained with.

The Amazon-FAR repos hold one `pytorch_model.bin` each and no config, so the package carries
it: every loader looks a source up here and, when it names a released model, builds the
model this table describes before loading the file. The table is data only; each layer
reads its own kinds (the tokenizer here, the world model and the heads in `worldmodel`).

A released model is recognised by its id (`Amazon-FAR/deltatok-kinetics`, with or without
`@REVISION`) and, for a copy made with `hf download ID --local-dir DIR`, by DIR's name
when it is the repo's own (`.../deltatok-kinetics/` or `.../deltatok-kinetics/pytorch_model.bin`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenizer.backbone import PAPER_BACKBONE
from tokenizer.data.kitti import MAX_DEPTH_M, MIN_DEPTH_M
from tokenizer.runtime.errors import CheckpointError
from tokenizer.runtime.hub import is_repo_id, split_revision

TOKENIZER = "tokenizer"
WORLD_MODEL = "world_model"
SEGMENTATION = "segmentation"
DEPTH = "depth"
RGB = "rgb"
RELEASED_FILE = "pytorch_model.bin"

# The paper's DeltaTok at ViT-B/16: 12 encoder and 12 decoder blocks, SwiGLU 2 * 3072 // 3 (the rest are
# DeltaTokConfig's defaults, which are the paper's). Sections as in configs/tokenizer/vitb_dinov3_kinetics.yaml.
PAPER_TOKENIZER = {"backbone": {"name": PAPER_BACKBONE}, "model": {"num_layers": 12, "mlp_hidden_size": 2048}}
# The paper's DeltaWorld predictor (configs/world_model/vitb_dinov3_kinetics.yaml's `model` section).
PAPER_WORLD_MODEL = {
    "kind": "deltaworld",
    "predictor": {
        "hidden_size": 768,
        "num_layers": 12,
        "num_heads": 12,
        "mlp_ratio": 4,
        "rope_axis_sizes": [60],
        "rope_unrotated_size": 4,
        "layer_scale_init": 1.0e-5,
    },
    "objective": {"kind": "bom", "num_hypotheses": 256, "selection_chunk": 64, "loss": "smooth_l1", "loss_beta": 0.1},
    "num_samples": 20,
}


@dataclass(frozen=True)
class ReleasedModel:
    repo_id: str
    kind: str  # tokenizer | world_model | segmentation | depth | rgb
    description: str
    # The config sections it was trained with: TokenizerConfig's or WorldModelConfig's fields, or a head's sizes.
    config: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None  # a world model's released tokenizer
    backbone: str = PAPER_BACKBONE  # the frozen DINOv3 whose features it reads (gated on the Hub)
    filename: str = RELEASED_FILE

    @property
    def name(self) -> str:
        return self.repo_id.split("/", 1)[1]


RELEASED: dict[str, ReleasedModel] = {
    model.repo_id: model
    for model in (
        ReleasedModel(
            "Amazon-FAR/deltatok-kinetics",
            TOKENIZER,
            "DeltaTok ViT-B/16 trained on Kinetics-700, 512 px",
            PAPER_TOKENIZER,
        ),
        ReleasedModel(
            "Amazon-FAR/deltaworld-kinetics",
            WORLD_MODEL,
            "DeltaWorld ViT-B predictor (best-of-many) on deltatok-kinetics, Kinetics-700",
            PAPER_WORLD_MODEL,
            tokenizer="Amazon-FAR/deltatok-kinetics",
        ),
        ReleasedModel(
            "Amazon-FAR/seg-head-vspw",
            SEGMENTATION,
            "linear segmentation probe, VSPW's 124 classes",
            {"num_classes": 124},
        ),
        ReleasedModel(
            "Amazon-FAR/seg-head-cityscapes",
            SEGMENTATION,
            "linear segmentation probe, Cityscapes' 19 classes",
            {"num_classes": 19},
        ),
        ReleasedModel(
            "Amazon-FAR/depth-head-kitti",
            DEPTH,
            "linear depth probe, 256 bins over KITTI's 1e-3-80 m",
            {"min_depth": MIN_DEPTH_M, "max_depth": MAX_DEPTH_M, "num_bins": 256},
        ),
        ReleasedModel(
            "Amazon-FAR/rgb-head-imagenet",
            RGB,
            "ViT decoder from features to pixels, trained on ImageNet (for pictures only)",
            {
                "hidden_size": 1152,
                "num_layers": 28,
                "num_heads": 16,
                "mlp_size": 4096,
                "patch_size": 16,
                "image_size": 512,
            },
        ),
    )
}


def released_model(source: str | Path, kind: str | None = None) -> ReleasedModel | None:
    """The released model `source` names (by id, or by a local copy's folder name), else None.

    With `kind`, a released model of another kind is an error: the file would not fit.
    """
    text = str(source)
    if is_repo_id(text):
        model = RELEASED.get(split_revision(text)[0])
    else:
        path = Path(text).expanduser()
        names = (path.name, path.parent.name) if path.name == RELEASED_FILE else (path.name,)
        model = next((m for m in RELEASED.values() if m.name in names), None)
        # A folder we saved under a released name is ours, not the released file.
        if model is not None and path.is_dir() and not (path / model.filename).is_file():
            model = None
    if model is not None and kind is not None and model.kind != kind:
        raise CheckpointError(
            f"{source} is the released {model.kind.replace('_', ' ')} {model.repo_id}, not a {kind.replace('_', ' ')}"
        )
    return model
