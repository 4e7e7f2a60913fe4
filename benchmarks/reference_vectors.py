"""Make the reference vectors that tests/test_reference.py and tests/test_heads_reference.py check against,
from a checkout of the published implementation that you supply.

    git clone https://github.com/amazon-far/deltatok /tmp/deltatok      # a scratch copy, outside this repository
    python -m benchmarks.reference_vectors --published /tmp/deltatok [--out tests/reference] [--seed 0]
    python -m pytest tests/test_reference.py tests/test_heads_reference.py

It builds the published DeltaTok, DeltaWorld and task heads at a tiny size (a 2-block DINOv3 ViT of width 96 on
64 px frames, 2 + 2 tokenizer blocks, a 2-block predictor of width 128, heads on a 4 x 4 grid), moves every
parameter away from its initial value with a seeded generator (the published initialisation scales each block's
residual by 1e-5, which would hide the blocks' weights from the outputs), runs them on seeded random frames in
float32, eval mode, on the CPU, and writes `deltatok_reference_tiny.pt` and `heads_reference_tiny.pt`: plain
tensors and dicts, read with `torch.load(path, weights_only=True)`, their keys as docs/results.md lists them. The
tests read them from the folder `$DELTAWORLD_REFERENCE_DIR` names, else from tests/reference/ (the default `--out`).

The published code runs as it is, imported from the checkout (`benchmarks/published.py`), with two things the
Hub would supply made here: the DINOv3 config and weights (the tiny backbone, seeded and perturbed like the
rest), and its image preprocessor, which transformers builds only with torchvision (not in this project's
environment: PyPI's builds pin another torch). With resizing and cropping off, as the published wrapper asks
for, that preprocessor scales uint8 to [0, 1] and normalises with ImageNet's mean and std: `preprocess` below.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.published import import_published
from tokenizer.backbone import IMAGENET_MEAN, IMAGENET_STD
from tokenizer.runtime.cli import run_cli
from tokenizer.runtime.errors import CheckpointError
from tokenizer.runtime.files import atomic_write

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "tests" / "reference"
DELTATOK_FILE = "deltatok_reference_tiny.pt"
HEADS_FILE = "heads_reference_tiny.pt"

BACKBONE = dict(
    hidden_size=96, intermediate_size=384, num_hidden_layers=2, num_attention_heads=3, num_register_tokens=4
)  # patch 16 and the rest at DINOv3's defaults
TOKENIZER = dict(num_hidden_layers=2, use_delta=True, use_qk_norm=True, use_gated_attn=True, use_swiglu=True)
WORLD = dict(
    predictor_hidden_size=128,
    predictor_num_hidden_layers=2,
    predictor_num_heads=4,
    rope_axis_sizes=[28],  # + 4 unrotated = the head size, 128 / 4
    rope_unrotated_size=4,
    mlp_ratio=4,
    num_samples_eval=3,
)
BOM_HYPOTHESES, LOSS_BETA = 8, 0.1
BATCH, FRAMES, FRAME_SIZE, CONTEXT, HORIZON = 2, 5, 64, 2, 3
RGB = dict(hidden_size=64, depth=2, num_heads=4, mlp_size=128, patch=16, img_size=64)
SEG_CLASSES, DEPTH_RANGE, DEPTH_BINS = 7, (1e-3, 80.0), 32


def perturb(module: nn.Module, generator: torch.Generator) -> None:
    """Move every parameter (and BatchNorm statistic) off its initial value, where zero biases, unit norm weights
    and 1e-5 LayerScales would hide a mistake in how one is used."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith("lambda1"):  # LayerScale: from 1e-5 (or 1) to 0.1-0.6, so every block counts
                param.copy_(0.1 + 0.5 * torch.rand(param.shape, generator=generator))
            else:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.add_(0.1 * torch.randn(layer.running_mean.shape, generator=generator))
                layer.running_var.copy_(0.5 + torch.rand(layer.running_var.shape, generator=generator))


def preprocess(images: torch.Tensor, **kwargs) -> dict:
    """The DINOv3 image processor without resize and crop: uint8 (N, 3, H, W) -> ImageNet-normalised floats."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return {"pixel_values": (images.float() / 255 - mean) / std}


def plain(value):
    """Tensors cloned out of shared storage (so a slice saves only itself), lists and dicts rebuilt."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone().contiguous()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


class Recorder:
    """Wraps the published world model's query sampler to keep each draw it makes."""

    def __init__(self, sample):
        self.sample, self.draws = sample, []

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        self.draws.append(self.sample(*args, **kwargs))
        return self.draws[-1]


def build_published(template: dict, seed: int, generator: torch.Generator):
    """The published backbone wrapper, DeltaTok and DeltaWorld at the tiny size, perturbed, in eval mode."""
    import transformers
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    template.update(BACKBONE)
    # The published wrapper loads the backbone and its preprocessor by Hub id; here they are the tiny model.
    transformers.AutoModel.from_pretrained = lambda *args, **kwargs: DINOv3ViTModel(DINOv3ViTConfig(**template))
    transformers.AutoImageProcessor.from_pretrained = lambda *args, **kwargs: preprocess
    from models.deltatok import DeltaTok
    from models.deltaworld import DeltaWorld
    from models.dinov3 import DINOv3

    torch.manual_seed(seed)
    backbone = DINOv3()
    tokenizer = DeltaTok(backbone, **TOKENIZER)
    world = DeltaWorld(tokenizer, num_samples_train=BOM_HYPOTHESES, **WORLD)
    # The tokenizer and the world model hold the backbone as a submodule: perturbing the world perturbs all.
    perturb(world, generator)
    return backbone, tokenizer, world.eval()


def deltatok_vectors(template: dict, seed: int) -> dict:
    """The contents of deltatok_reference_tiny.pt: the published models' weights, seeded inputs, their outputs."""
    generator = torch.Generator().manual_seed(seed)
    backbone, tokenizer, world = build_published(template, seed, generator)
    frames = torch.randint(0, 256, (BATCH, FRAMES, 3, FRAME_SIZE, FRAME_SIZE), dtype=torch.uint8, generator=generator)
    gaps = 0.05 + 0.2 * torch.rand(BATCH, FRAMES - 1, generator=generator)  # irregular spacing: RoPE over time counts
    timestamps = torch.cat([torch.zeros(BATCH, 1), gaps.cumsum(1)], 1)

    with torch.no_grad():
        features = backbone(frames)
        empty = backbone(torch.zeros_like(frames[:, :1]))[:, 0]
        rope = tokenizer._rope(frames)
        tokens = tokenizer.tokenize_offline(empty, features, rope)
        decoded = tokenizer.decode(tokens[:, 1], features[:, 0], rope)
        tok_preds, tok_targets, tok_context = tokenizer(frames, horizon=HORIZON)

        world._sample_queries = Recorder(world._sample_queries)
        torch.manual_seed(seed + 1)
        preds, targets, context = world(frames, timestamps, ctx_len=CONTEXT)
        queries = world._sample_queries.draws
        # One training step's best-of-many choice, run in eval mode so no augmentation enters it.
        world._sample_queries = Recorder(world._sample_queries.sample)
        criterion = nn.SmoothL1Loss(reduction="none", beta=LOSS_BETA)
        torch.manual_seed(seed + 2)
        predictions, bom_targets = world._forward_train(frames, timestamps, criterion)
        loss = criterion(predictions, bom_targets).mean()

    state = world.state_dict()
    return plain(
        {
            "description": "Published DeltaTok/DeltaWorld outputs (eval mode, float32, CPU) for a tiny perturbed "
            f"configuration, made by benchmarks.reference_vectors with seed {seed}.",
            "backbone_config": backbone.backbone.config.to_dict(),
            "backbone_state_dict": backbone.backbone.state_dict(),
            "tokenizer_config": {**TOKENIZER, "swiglu_hidden_size": 2 * BACKBONE["intermediate_size"] // 3},
            "tokenizer_state_dict": {k: v for k, v in tokenizer.state_dict().items() if not k.startswith("backbone.")},
            "world_config": WORLD,
            "world_state_dict": {k: v for k, v in state.items() if k.startswith("predictor.")},
            "frames": frames,
            "timestamps": timestamps,
            "features": features,
            "empty_frame_features": empty,
            "delta_tokens": tokens,
            "teacher_forced_decode_frame1": decoded,
            "tokenizer_rollout_h3": {"preds": tok_preds, "targets": tok_targets, "context": tok_context},
            "world_queries": queries,
            "world_rollout_ctx2": {"preds": preds, "targets": targets, "context": context},
            "bom_train_step": {
                "num_samples_train": BOM_HYPOTHESES,
                "loss_fn": "smooth_l1",
                "loss_beta": LOSS_BETA,
                "sampled_queries": world._sample_queries.draws,
                "predictions": predictions,
                "targets": bom_targets,
                "loss": loss,
            },
        }
    )


def heads_vectors(norm_weight: torch.Tensor, norm_bias: torch.Tensor, seed: int) -> dict:
    """The published segmentation, depth and RGB heads on the tiny backbone's features, perturbed, with outputs.

    `norm_weight`, `norm_bias`: the backbone's final LayerNorm affine, which the RGB head undoes.
    """
    from models.task_heads import DepthHead, RGBHead, SegHead

    generator = torch.Generator().manual_seed(seed + 3)
    width = norm_weight.numel()
    torch.manual_seed(seed + 3)
    seg = SegHead(width, SEG_CLASSES)
    depth = DepthHead(width, *DEPTH_RANGE, num_bins=DEPTH_BINS)
    rgb = RGBHead(width, norm_weight, norm_bias, list(IMAGENET_MEAN), list(IMAGENET_STD), **RGB)
    grid = RGB["img_size"] // RGB["patch"]
    entries = {}
    with torch.no_grad():
        for head in (seg, depth, rgb):
            perturb(head, generator)  # the RGB head's position table too: the file's table must be the one read
            head.eval()
        native = torch.randn(BATCH, width, grid, grid, generator=generator)
        other = torch.randn(BATCH, width, grid + 2, grid + 1, generator=generator)  # its table resized
        entries["seg_head"] = {"num_classes": SEG_CLASSES, "state_dict": seg.state_dict()}
        entries["depth_head"] = {
            "min_depth": DEPTH_RANGE[0],
            "max_depth": DEPTH_RANGE[1],
            "num_bins": DEPTH_BINS,
            "state_dict": depth.state_dict(),
        }
        for key, head in (("seg_head", seg), ("depth_head", depth)):
            entries[key].update(input=native, output=head(native))
        entries["rgb_head"] = {
            "config": RGB,
            "in_size": width,
            "norm_weight": norm_weight,
            "norm_bias": norm_bias,
            "image_mean": list(IMAGENET_MEAN),
            "image_std": list(IMAGENET_STD),
            "state_dict": rgb.state_dict(),
            "input": native,
            "output": rgb(native),
            "input_other_grid": other,
            "output_other_grid": rgb(other),
        }
    description = (
        "Published task heads' outputs (eval mode, float32, CPU) at a tiny perturbed size, made by "
        f"benchmarks.reference_vectors with seed {seed}."
    )
    return plain({"description": description, **entries})


def save(path: Path, vectors: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(vectors, tmp))
    try:  # what the tests will do: a file they cannot read this way is no use to them
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} does not load with weights_only=True ({err})") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--published", required=True, type=Path, help="a checkout of github.com/amazon-far/deltatok")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder to write both files into")
    parser.add_argument("--seed", type=int, default=0, help="seeds the weights' perturbation, the inputs and the draws")
    args = parser.parse_args(argv)
    template = import_published(args.published.expanduser().resolve())
    start = time.perf_counter()
    vectors = deltatok_vectors(template, args.seed)
    backbone = vectors["backbone_state_dict"]
    heads = heads_vectors(backbone["norm.weight"], backbone["norm.bias"], args.seed)
    for name, content in ((DELTATOK_FILE, vectors), (HEADS_FILE, heads)):
        save(args.out / name, content)
    print(f"wrote {DELTATOK_FILE} and {HEADS_FILE} into {args.out} in {time.perf_counter() - start:.1f} s")
    # The tests read tests/reference/ unless told another folder.
    where = "" if args.out.resolve() == DEFAULT_OUT else f"DELTAWORLD_REFERENCE_DIR={args.out} "
    print(f"check them: {where}python -m pytest tests/test_reference.py tests/test_heads_reference.py")


if __name__ == "__main__":
    run_cli(main)
