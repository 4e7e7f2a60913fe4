"""The DeltaTok training step side by side with the published implementation's, at identical configuration.

    git clone https://github.com/amazon-far/deltatok /tmp/deltatok      # a scratch copy, outside this repository
    python -m benchmarks.reference_step --reference /tmp/deltatok [--configs 0,1,2] [--steps 10] [--compile] \
        [--profile 1]

Both models are built in this process with the same width, heads, blocks, patches, batch and
SwiGLU hidden size (their parameter counts are checked equal) and trained on the same random
features: encode, decode, log-cosh loss, backward and AdamW as each trainer builds it (ours fused,
as `tokenizer.runtime.optim`; the reference's Lightning default). The reference is imported from
`--reference`, never copied here (`benchmarks/published.py`: its DINOv3 template config is built locally
instead of downloaded, and its checkpoint loader, which needs Lightning, refuses since none is loaded). Timings
are medians of `--steps // 2` steps, best of two interleaved rounds, in fp32 on the CPU threads given.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks.published import import_published
from tokenizer.deltatok import DeltaTok, DeltaTokConfig, log_cosh
from tokenizer.runtime.cli import run_cli
from tokenizer.runtime.errors import ConfigError

CONFIGS = [  # width, heads, blocks per side, patches, batch, SwiGLU hidden
    (96, 3, 2, 64, 32, 256),
    (192, 3, 4, 64, 32, 2048),
    (768, 12, 2, 256, 4, 2048),
]


def import_reference(root: Path):
    """The reference's DeltaTok class and the template config it is built from."""
    template = import_published(root)
    from models.deltatok import DeltaTok as Reference

    return Reference, template


def build(reference, template: dict, width: int, heads: int, blocks: int, hidden: int):
    # The reference derives SwiGLU's hidden size as 2 * intermediate // 3 from the template.
    template.clear()
    template.update(hidden_size=width, num_attention_heads=heads, intermediate_size=hidden * 3 // 2, patch_size=16)
    backbone = torch.nn.Module()
    backbone.hidden_size, backbone.num_heads, backbone.patch_size = width, heads, 16
    torch.manual_seed(0)
    theirs = reference(backbone, num_hidden_layers=blocks)
    del theirs.backbone
    ours = DeltaTok(DeltaTokConfig(num_layers=blocks, mlp_hidden_size=hidden), width, heads)
    count = sum(p.numel() for p in ours.parameters())
    if count != sum(p.numel() for p in theirs.parameters()):
        raise ConfigError("the two models differ in parameter count: not the same configuration")
    return ours.train(), theirs.train(), count


def make_step(model, rope, fused: bool, compile_: bool = False):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    encode, decode = (
        (torch.compile(model.encode), torch.compile(model.decode)) if compile_ else (model.encode, model.decode)
    )

    def step(prev: torch.Tensor, nxt: torch.Tensor) -> None:
        table = rope()
        log_cosh(decode(encode(prev, nxt, table), prev, table), nxt).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def median_ms(step, prev, nxt, steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step(prev, nxt)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(prev, nxt)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, type=Path, help="a checkout of github.com/amazon-far/deltatok")
    parser.add_argument("--configs", default="0,1,2", help="rows of CONFIGS to run")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time ours under torch.compile")
    parser.add_argument(
        "--profile", type=int, default=-1, help="print both profiles (top ops by self time) for this config instead"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    reference, template = import_reference(args.reference)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32")
    print(
        "| width, heads, blocks, patches, batch, SwiGLU hidden | params | ours ms | reference ms | reference / ours |"
        + (" ours compiled ms |" if args.compile else "")
    )
    for index in map(int, args.configs.split(",")):
        width, heads, blocks, patches, batch, hidden = CONFIGS[index]
        ours, theirs, count = build(reference, template, width, heads, blocks, hidden)
        side = int(patches**0.5)
        pixels = torch.zeros(1, 3, side * 16, side * 16)
        generator = torch.Generator().manual_seed(1)
        prev = torch.randn(batch, patches, width, generator=generator)
        nxt = prev + 0.3 * torch.randn(batch, patches, width, generator=generator)
        ours_step = make_step(ours, lambda ours=ours, side=side: ours.rope((side, side)), fused=True)
        theirs_step = make_step(
            theirs, lambda theirs=theirs, pixels=pixels: theirs.rope_embeddings(pixels), fused=False
        )
        if args.profile == index:
            from torch.profiler import ProfilerActivity, profile

            for name, step in (("ours", ours_step), ("reference", theirs_step)):
                median_ms(step, prev, nxt, 1)
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(3):
                        step(prev, nxt)
                print(f"{name}:\n{prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=15)}")
            continue
        ours_ms, theirs_ms = [], []
        for _ in range(2):  # interleaved rounds share whatever else the machine is doing
            ours_ms.append(median_ms(ours_step, prev, nxt, args.steps // 2))
            theirs_ms.append(median_ms(theirs_step, prev, nxt, args.steps // 2))
        row = (
            f"| {width}, {heads}, {blocks}+{blocks}, {patches}, {batch}, {hidden} | {count / 1e6:.2f} M | "
            f"{min(ours_ms):.1f} | {min(theirs_ms):.1f} | {min(theirs_ms) / min(ours_ms):.2f}x |"
        )
        if args.compile:
            compiled, _, _ = build(reference, template, width, heads, blocks, hidden)
            compiled_ms = median_ms(
                make_step(
                    compiled,
                    lambda compiled=compiled, side=side: compiled.rope((side, side)),
                    fused=True,
                    compile_=True,
                ),
                prev,
                nxt,
                args.steps,
            )
            row += f" {compiled_ms:.1f} ({min(ours_ms) / compiled_ms:.2f}x eager) |"
        print(row, flush=True)


if __name__ == "__main__":
    run_cli(main)
