"""Decoding throughput of training clips through a torch DataLoader.

Writes N synthetic mp4s to a temporary folder, builds the `videos` training
dataset on them and times how many clips per second a DataLoader delivers for
each requested worker count. The first batch (worker start-up) is not timed.

    python benchmarks/video_decode.py --num-workers 0 2 --backend ffmpeg
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from torch.utils.data import DataLoader

from tokenizer.data import build_video_dataset
from tokenizer.runtime.devices import worker_start_method


def write_videos(folder: Path, count: int, num_frames: int, height: int, width: int, fps: int) -> None:
    """`count` mp4s of moving stripes with noise, so the codec has real work to undo."""
    # One noise field, shifted every frame: as hard to code as fresh noise, far cheaper to make.
    noise = np.random.default_rng(0).normal(0, 8, size=(height, width, 3))
    columns = np.arange(width)[None, :, None]
    rows = np.arange(height)[:, None, None]
    for index in range(count):
        frames = []
        for t in range(num_frames):
            phase = (columns + 3 * t + 7 * index) / 17.0 + rows / 29.0
            base = 127 + 100 * np.sin(phase + np.array([0.0, 2.0, 4.0]))
            frames.append(np.clip(base + np.roll(noise, 5 * t, axis=1), 0, 255).astype(np.uint8))
        imageio.mimwrite(folder / f"video_{index:03d}.mp4", frames, fps=fps, macro_block_size=16)


def measure(
    root: Path,
    num_workers: int,
    batch_size: int,
    num_batches: int,
    num_frames: int,
    frame_size: int,
    pin_memory: bool,
    prefetch_factor: int,
    backend: str,
) -> dict[str, float]:
    """Clips per second for one DataLoader setting, over `num_batches` timed batches."""
    dataset = build_video_dataset("videos", root, "train", num_frames, frame_size, seed=0, video_backend=backend)
    total = (num_batches + 1) * batch_size
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        # Training hands out ever-growing sample ids; any int >= 0 is a valid item.
        sampler=range(total),
        num_workers=num_workers,
        multiprocessing_context=worker_start_method(num_workers),
        pin_memory=pin_memory,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
    )
    batches = iter(loader)
    next(batches)
    start = time.perf_counter()
    clips = skipped = 0
    for batch in batches:
        clips += batch["frames"].shape[0]
        skipped += int(batch["num_skipped"].sum())
    seconds = time.perf_counter() - start
    return {
        "num_workers": num_workers,
        "clips": clips,
        "seconds": seconds,
        "clips_per_s": clips / seconds,
        "skipped": skipped,
    }


def run_benchmark(args: argparse.Namespace) -> list[dict[str, float]]:
    """Write the videos once, then measure every worker count in `args.num_workers`."""
    with tempfile.TemporaryDirectory(prefix="video_decode_") as folder:
        root = Path(folder)
        write_videos(root, args.videos, args.video_frames, args.height, args.width, args.fps)
        return [
            measure(
                root,
                workers,
                args.batch_size,
                args.batches,
                args.num_frames,
                args.frame_size,
                args.pin_memory,
                args.prefetch_factor,
                args.backend,
            )
            for workers in args.num_workers
        ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=4, help="number of synthetic videos")
    parser.add_argument("--video-frames", type=int, default=250, help="frames per video (250 = 10 s, like Kinetics)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=352)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--num-frames", type=int, default=8, help="frames per clip")
    parser.add_argument("--frame-size", type=int, default=224, help="side of the square output frames")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per setting")
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--prefetch-factor", type=int, default=2)
    parser.add_argument("--pin-memory", action=argparse.BooleanOptionalAction, default=torch.cuda.is_available())
    parser.add_argument("--backend", choices=["auto", "pyav", "ffmpeg"], default="auto")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args = parse_args(argv)
    results = run_benchmark(args)
    print(
        f"{args.videos} videos of {args.video_frames} frames {args.width}x{args.height}; "
        f"{args.num_frames}-frame clips at {args.frame_size}px; backend {args.backend}; pin_memory {args.pin_memory}"
    )
    print(f"{'workers':>8} {'clips':>6} {'seconds':>8} {'clips/s':>8} {'skipped':>8}")
    for row in results:
        print(
            f"{row['num_workers']:>8} {row['clips']:>6} {row['seconds']:>8.2f} {row['clips_per_s']:>8.1f} "
            f"{row['skipped']:>8}"
        )
    return results


if __name__ == "__main__":
    main()
