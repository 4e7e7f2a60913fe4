"""Is the tokenizer's error its encoder's or its decoder's? Decode each frame pair with the encoder's token,
then with a token optimised for that pair against the frozen decoder.

If the optimised tokens decode far better, the decoder can render the change and the encoder fails to say it
(encoder capacity is the lever); if they do not, the decoder is the limit. The fitted tokens are free vectors,
not held to the encoder's final LayerNorm, so their figures bound from above what a better encoder could reach. With
heads, both are also scored by the share of the copy-previous -> present mIoU gap they close, as `rollout.py` scores its
horizon-1 tokenizer.

    python -m benchmarks.token_headroom --tokenizer runs/tokenizer_tiny/final --heads runs/heads_tiny
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.data import DataLoader

from tokenizer.data.registry import DataConfig, build_dataset
from tokenizer.deltatok import DeltaTok, log_cosh
from tokenizer.model import Tokenizer
from tokenizer.runtime.files import atomic_write_text
from worldmodel.evaluation import gap_closed
from worldmodel.heads import SEGMENTATION, TaskHeads
from worldmodel.metrics import MeanIoU


def optimised_tokens(
    deltatok: DeltaTok, prev: torch.Tensor, nxt: torch.Tensor, rope, steps: int, lr: float
) -> torch.Tensor:
    """The encoder's tokens (B, 1, D) for prev -> nxt (B, N, D), then `steps` Adam steps on their decoding's log-cosh
    loss."""
    with torch.no_grad():
        start = deltatok.encode(prev, nxt, rope)
    tokens = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([tokens], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            # Gradients for the tokens alone: the decoder's weights are left without .grad.
            (tokens.grad,) = torch.autograd.grad(log_cosh(deltatok.decode(tokens, prev, rope), nxt).mean(), [tokens])
            optimizer.step()
    return tokens.detach()


def headroom(
    tokenizer: Tokenizer,
    frames: torch.Tensor,
    labels: torch.Tensor | None,
    heads: TaskHeads | None,
    steps: int,
    lr: float,
) -> dict:
    """frames (B, 2, 3, H, W) uint8, labels (B, H_l, W_l) of the second frame or None -> losses and, with both, mIoU
    gaps."""
    tokenizer.eval().requires_grad_(False)
    with torch.no_grad():
        features = tokenizer.features(frames).float()
    grid = tokenizer.grid(frames)
    prev, nxt = features[:, 0], features[:, 1]
    rope = tokenizer.rope(grid, prev.device)
    deltatok = tokenizer.deltatok
    with torch.no_grad():
        decoded = {
            "own_token": deltatok(prev, nxt, rope),
            "optimised_token": deltatok.decode(optimised_tokens(deltatok, prev, nxt, rope, steps, lr), prev, rope),
        }
    result = {f"{name}_loss": log_cosh(pred, nxt).mean().item() for name, pred in decoded.items()}
    result["copy_previous_loss"] = log_cosh(prev, nxt).mean().item()
    segmentation = heads.segmentation if heads is not None else None
    if segmentation is not None and labels is not None:
        miou = {}
        for name, pred in {"present": nxt, "copy_previous": prev, **decoded}.items():
            metric = MeanIoU(segmentation.num_classes)
            metric.update(segmentation.predict(pred, grid, labels.shape[-2:]), labels)
            miou[name] = metric.compute()
        result["miou"] = miou
        result["gap_closed_miou"] = {
            name: gap_closed(miou[name], miou["copy_previous"], miou["present"]) for name in decoded
        }
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="runs/tokenizer_tiny/final")
    parser.add_argument("--heads", default="runs/heads_tiny", help="segmentation heads folder; '' = losses only")
    parser.add_argument("--clips", type=int, default=64, help="Shapes validation clips, one pair each")
    parser.add_argument(
        "--stride", type=int, default=2, help="simulator steps between the two frames (2 = 0.2 s, as make demo scores)"
    )
    parser.add_argument("--frame-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300, help="Adam steps per token")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    tokenizer = Tokenizer.from_pretrained(args.tokenizer)
    heads = TaskHeads.load(args.heads, in_dim=tokenizer.dim) if args.heads else None
    data = DataConfig(
        source="shapes", val_split="val", frame_size=args.frame_size, val_clips=args.clips, shapes_strides=[args.stride]
    )
    batch = next(iter(DataLoader(build_dataset(data, "val", args.seed, num_frames=2), batch_size=args.clips)))
    result = headroom(tokenizer, batch["frames"], batch[SEGMENTATION][:, 1], heads, args.steps, args.lr)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    return result


if __name__ == "__main__":
    main()
