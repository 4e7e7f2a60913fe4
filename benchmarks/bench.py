"""Speed, FLOPs and memory of DeltaTok, DeltaWorld and the patch-level DINOWorld, side by side in one run.

    python -m benchmarks.bench --out runs/bench [--quick]        (or: make bench)

Everything is measured in one process on one machine, so the numbers can be set against each other:
- the machine, and its matmul peak measured here (fp32 on CPU, bf16 on CUDA: the training dtype);
- parameters and FLOPs per imagined frame of DeltaWorld (the predictor alone, and with the DeltaTok
  decode to every patch feature) and of DINOWorld (every patch predicted), at the tiny default, at
  ViT-S/16 on 224 px frames (196 patches) and at the paper's ViT-B/16 on 512 px frames (1,024 patches),
  counted on the meta device: no weights, no download;
- latency per imagined frame and per CEM planning step of both world models at tiny;
- seconds per CEM planning step at a ViT-S/16-like size on 224 px frames (196 patches, every model
  384 wide), where a planning step is FLOP-bound: DeltaWorld with the token cost and with the feature
  cost, and DINOWorld, with their FLOPs and the time ratios, and seconds per env step: taking in the
  newest frame (its tokens alone taken, the context's kept) and the search (`--quick`: at tiny);
- training throughput of the tokenizer and of the world model, the step time of best-of-many with
  256 hypotheses over 1, and the model FLOPs utilisation (MFU) of the tokenizer's training step;
- wall time, peak memory and the CPU share other processes took (which disturbs timings) of each phase.
Writes <out>/report.json and <out>/report.md and prints the tables. Every model has seeded random
weights: speed does not depend on what a model has learned. `--quick` only checks that every number
can be made (few repeats, small batches); its timings mean little.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from benchmarks.flops import (
    SCALES,
    TINY_TOKENIZER,
    build_tokenizer,
    flop_ratios,
    imagined_frame_cost,
    inference_world,
    load_world_run,
)
from benchmarks.report import markdown, targets
from benchmarks.speed import imagination_ms, plan_bench_config, planning, scale_planning
from benchmarks.timing import DISTURBED_SHARE, FULL, QUICK, Phases, Settings, machine_info, matmul_peak
from benchmarks.training import tokenizer_training, world_model_training
from tokenizer.runtime.cli import Flag, parse_run_config, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.devices import use_threads
from tokenizer.runtime.files import atomic_write_text


def run_benchmark(settings: Settings, quick: bool) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    started = time.perf_counter()
    phases = Phases(device, announce="[bench]")
    report: dict = {"machine": machine_info(device), "quick": quick, "settings": asdict(settings)}

    with phases("matmul_peak"):
        peak = matmul_peak(settings, device)
    report["matmul_peak_gflops"] = peak["gflops"]
    report["matmul_peak"] = peak

    with phases("flop_count"):
        costs = {name: imagined_frame_cost(scale, "meta") for name, scale in SCALES.items()}
        # Meta-device counts stand in for real ones; at tiny, check them against a real run.
        real_tiny = imagined_frame_cost(SCALES["tiny"], device)
    report["params"] = {name: cost["params"] for name, cost in costs.items()}
    report["flops_per_imagined_frame"] = {name: cost["flops"] for name, cost in costs.items()}
    report["flop_ratios"] = {name: flop_ratios(cost["flops"]) for name, cost in costs.items()}
    report["flop_settings"] = {
        name: {key: cost[key] for key in ("frame_size", "patches", "context")} | {"samples": 1, "counted_on": "meta"}
        for name, cost in costs.items()
    }
    report["flops_meta_matches_real_tiny"] = real_tiny["flops"] == costs["tiny"]["flops"]

    with phases("imagination_latency"):
        torch.manual_seed(0)
        tokenizer = build_tokenizer(TINY_TOKENIZER).to(device).eval()
        runs = {
            "deltaworld": load_world_run(SCALES["tiny"].deltaworld),
            "dinoworld": load_world_run(SCALES["tiny"].dinoworld),
        }
        report["latency_ms_per_imagined_frame"] = {
            f"{name}_tiny": imagination_ms(inference_world(tokenizer, run).to(device), run, settings, device)
            for name, run in runs.items()
        }
        report["latency_settings"] = {
            "batch": 1,
            "samples": runs["deltaworld"].model.num_samples,
            "context": runs["deltaworld"].eval.context,
            "horizon": settings.horizon,
        }

    with phases("planning_latency"):
        plan = planning(settings)
    report["latency_ms_per_planning_step"] = plan["ms_per_planning_step"]
    report["planning_settings"] = {**plan["planner"], "device": plan["device"]}

    with phases(f"planning_{settings.planning_scale}"):
        report[f"planning_{settings.planning_scale}"] = scale_planning(
            settings.planning_scale, plan_bench_config(settings).planner, settings, device
        )

    with phases("train_tokenizer"):
        tokenizer_train = tokenizer_training(settings, device, peak["gflops"])
    with phases("train_world_model"):
        world_train = world_model_training(settings, device)
    configured = world_train[f"bom{world_train['configured_num_hypotheses']}"]
    report["train_clips_per_s"] = {
        "tokenizer_tiny": tokenizer_train["clips_per_s"],
        "world_model_tiny": configured["clips_per_s"],
    }
    report["train_tokenizer_tiny"] = tokenizer_train
    report["train_world_model_tiny"] = world_train
    report["world_model_training"] = {
        "cached_over_on_the_fly_speedup": world_train["cached_tokens"]["cached_over_on_the_fly_speedup"],
        "cache_mib_per_1000_clips": world_train["cached_tokens"]["cache_mib_per_1000_clips"],
    }
    report["bom256_over_bom1_step_time"] = world_train["bom256"]["step_ms"] / world_train["bom1"]["step_ms"]
    report["mfu_train_tokenizer_tiny"] = tokenizer_train["mfu"]

    report["phases"] = phases.records
    report["disturbed_phases"] = [
        name for name, record in phases.records.items() if record["other_processes_cpu_share"] > DISTURBED_SHARE
    ]
    report["peak_memory_mb"] = max(record["peak_memory_mb"] for record in phases.records.values())
    report["peak_memory_kind"] = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss_cumulative"
    report["targets"] = targets(report)
    report["seconds"] = time.perf_counter() - started
    return report


@dataclass
class BenchRunConfig:
    out: str = "runs/bench"  # folder for report.json and report.md
    quick: bool = False  # few repeats and small batches: checks the benchmark runs, timings mean little
    # Torch CPU threads; null = PyTorch's default (one per core). On a busy machine ask for no more than the idle
    # cores: OpenMP threads waiting on a preempted peer slow small ops tenfold and more.
    threads: int | None = None


FLAGS = {
    "--out": Flag("out", "folder for report.json and report.md"),
    "--quick": Flag("quick", "few repeats and small batches (timings mean little)", bool),
    "--threads": Flag("threads", "torch CPU threads (default: one per core)", int),
}


def main(argv: list[str] | None = None) -> dict:
    run = to_object(
        parse_run_config(BenchRunConfig, __doc__, "a YAML with out: and threads:", argv, FLAGS, default_config=None)
    )
    use_threads(run.threads, "threads")
    report = run_benchmark(QUICK if run.quick else FULL, run.quick)
    out = Path(run.out)
    table = markdown(report)
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "report.md", table)
    print(table)
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    return report


if __name__ == "__main__":
    run_cli(main)
