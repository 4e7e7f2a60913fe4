"""A Hugging Face Hub cache laid out on disk as huggingface_hub writes it, for loading by id offline,
and the released models as tiny stand-ins in it.

    <cache>/models--ORG--NAME/blobs/<sha256>
    <cache>/models--ORG--NAME/snapshots/<commit>/<file> -> ../../blobs/<sha256>
    <cache>/models--ORG--NAME/refs/<revision>  (holds <commit>)

The loaders then go through huggingface_hub's own cache resolution (snapshot_download with
HF_HUB_OFFLINE), not through a stand-in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from reference_files import load_reference
from tokenizer.backbone import PAPER_BACKBONE
from tokenizer.released import RELEASED
from worldmodel.heads import SegmentationHead


def add_repo(cache: Path, repo_id: str, files: dict[str, bytes], revision: str = "main") -> Path:
    """Put `files` (name in the repo -> content) in the cache as `repo_id` at `revision`; returns the snapshot
    folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode() + b"".join(sorted(files.values()))).hexdigest()
    snapshot = repo / "snapshots" / commit
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot


def add_folder(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> Path:
    """A folder (e.g. written by save_pretrained) as the content of repo `repo_id`."""
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return add_repo(cache, repo_id, files, revision)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hub cache that every loader uses, with HF_HUB_OFFLINE=1 (huggingface_hub reads both at import,
    so the module's values are set too)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


# The released models as tiny stand-ins: the table (tokenizer.released) says the reference vectors' sizes, and
# the offline cache holds the gated DINOv3 (config.json + model.safetensors) and each release's pytorch_model.bin,
# made from the published implementation's tiny reference weights (reference_files.py). The segmentation heads keep
# their class counts (19, 124) with seeded weights, so they score Cityscapes- and VSPW-labelled clips; the reference
# segmentation head (7 classes) is revision "golden" of seg-head-cityscapes.
TOKENIZER_ID = "Amazon-FAR/deltatok-kinetics"
WORLD_ID = "Amazon-FAR/deltaworld-kinetics"
SEG_ID, VSPW_ID = "Amazon-FAR/seg-head-cityscapes", "Amazon-FAR/seg-head-vspw"
DEPTH_ID, RGB_ID = "Amazon-FAR/depth-head-kitti", "Amazon-FAR/rgb-head-imagenet"


def torch_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def golden_configs(golden: dict, heads: dict) -> dict[str, dict]:
    """The reference vectors' tiny sizes in the released table's form, per released id."""
    tok, world, rgb = golden["tokenizer_config"], golden["world_config"], heads["rgb_head"]["config"]
    predictor = {
        "hidden_size": world["predictor_hidden_size"],
        "num_layers": world["predictor_num_hidden_layers"],
        "num_heads": world["predictor_num_heads"],
        "mlp_ratio": world["mlp_ratio"],
        "rope_axis_sizes": list(world["rope_axis_sizes"]),
        "rope_unrotated_size": world["rope_unrotated_size"],
    }
    depth = heads["depth_head"]
    return {
        TOKENIZER_ID: {
            "backbone": {"name": PAPER_BACKBONE},
            "model": {"num_layers": tok["num_hidden_layers"], "mlp_hidden_size": tok["swiglu_hidden_size"]},
        },
        WORLD_ID: {"kind": "deltaworld", "predictor": predictor, "num_samples": world["num_samples_eval"]},
        DEPTH_ID: {"min_depth": depth["min_depth"], "max_depth": depth["max_depth"], "num_bins": depth["num_bins"]},
        RGB_ID: {
            "hidden_size": rgb["hidden_size"],
            "num_layers": rgb["depth"],
            "num_heads": rgb["num_heads"],
            "mlp_size": rgb["mlp_size"],
            "patch_size": rgb["patch"],
            "image_size": rgb["img_size"],
        },
    }


@pytest.fixture(scope="session")
def heads_golden() -> dict:
    return load_reference("heads_reference_tiny.pt")


@pytest.fixture
def tiny_released(golden, heads_golden, offline_cache, monkeypatch) -> Path:
    """Every released id loads offline from `offline_cache`, at the reference vectors' tiny sizes."""
    for repo_id, config in golden_configs(golden, heads_golden).items():
        monkeypatch.setitem(RELEASED, repo_id, dataclasses.replace(RELEASED[repo_id], config=config))
    backbone_config = {**golden["backbone_config"], "model_type": "dinov3_vit"}
    backbone_weights = {key: value.contiguous() for key, value in golden["backbone_state_dict"].items()}
    files = {
        "config.json": json.dumps(backbone_config).encode(),
        "model.safetensors": safetensors_bytes(backbone_weights),
    }
    add_repo(offline_cache, PAPER_BACKBONE, files)
    states = {
        TOKENIZER_ID: golden["tokenizer_state_dict"],
        WORLD_ID: golden["world_state_dict"],
        DEPTH_ID: heads_golden["depth_head"]["state_dict"],
        RGB_ID: heads_golden["rgb_head"]["state_dict"],
    }
    width = golden["features"].shape[-1]
    torch.manual_seed(0)
    for repo_id in (SEG_ID, VSPW_ID):
        states[repo_id] = SegmentationHead(width, RELEASED[repo_id].config["num_classes"]).state_dict()
    for repo_id, state in states.items():
        add_repo(offline_cache, repo_id, {"pytorch_model.bin": torch_bytes(state)})
    add_repo(
        offline_cache,
        SEG_ID,
        {"pytorch_model.bin": torch_bytes(heads_golden["seg_head"]["state_dict"])},
        revision="golden",
    )
    return offline_cache
