"""Tokenize once: a frozen tokenizer's delta tokens of a fixed set of clips, kept on disk.

    python -m worldmodel.token_cache --config configs/world_model/tiny.yaml cache.out=runs/tokens_tiny \
        [cache.num_clips=4096]
    accelerate launch --num_processes 8 -m worldmodel.token_cache --config ...      # each process writes its share
    python train_world_model.py --config configs/world_model/tiny.yaml data.source=tokens data.root=runs/tokens_tiny \
        data.val_source=shapes

The tokenizer is frozen while a world model trains, so a clip's tokens are a pure
function of the clip: clips 0..num_clips-1 of the configured training source are
tokenized once, and training reads clip `i` as cached clip `i % num_clips`. Worth it
for fixed clips (Shapes, recorded episodes, a video folder read without
augmentation); not for a recipe that draws a new random crop every step (the
paper's Kinetics training), where a cached clip would be seen again unchanged.

`out` holds `shard_NNNNN.safetensors` (tokens (C, T, D), timestamps (C, T), actions
(C, T, A) when the source has them, and summaries (C, T, g*g, D) when the world model
has a readout to train: `worldmodel.readout`), `plan.json` (what is being made: tokenizer
fingerprint, data config, clip count; written first, so a resumed run can check it
is making the same cache) and `manifest.json` (the plan plus the shards and their
sizes; written last, so a cache with a manifest is complete). Every file is written
atomically: an interrupted run is resumed by running the same command again, and
only the missing shards are made. Training reads a cache through `worldmodel.token_clips`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from safetensors import safe_open
from torch.utils.data import Dataset, default_collate
from tqdm.auto import tqdm

from tokenizer.data.registry import build_dataset
from tokenizer.model import Tokenizer
from tokenizer.runtime.cli import parse_run_config, run_cli
from tokenizer.runtime.config import to_object
from tokenizer.runtime.devices import launched_on_cpu, mixed_precision
from tokenizer.runtime.errors import ConfigError
from tokenizer.runtime.files import atomic_write_text, save_safetensors
from worldmodel.readout import summarize
from worldmodel.run_config import TokenCacheConfig, WorldModelRunConfig
from worldmodel.token_clips import MANIFEST, PLAN, TOKENS_SOURCE, read_json, tokenizer_fingerprint

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.safetensors"


def write_token_cache(
    tokenizer: Tokenizer, dataset: Dataset, cfg: TokenCacheConfig, plan: dict, accelerator: Accelerator
) -> dict:
    """Tokenize clips 0..cfg.num_clips-1 of `dataset` into cfg.out; `plan` describes the cache. Returns the manifest."""
    if cfg.num_clips < 1 or cfg.shard_clips < 1 or cfg.batch_size < 1:
        raise ConfigError("cache.num_clips, cache.shard_clips and cache.batch_size must be at least 1")
    if cfg.dtype not in DTYPES:
        raise ConfigError(f"cache.dtype {cfg.dtype!r} is not one of {', '.join(DTYPES)}")
    if len(dataset) < cfg.num_clips:
        raise ConfigError(f"cache.num_clips={cfg.num_clips} is more than the {len(dataset)} clips the source gives")
    out = Path(cfg.out)
    # Every process checks (so each stops on its own, none waits for a failed peer); then only the main one writes.
    replace = _check_out(out, plan, cfg.overwrite)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and replace is not None:
        if replace:
            shutil.rmtree(out)
        atomic_write_text(out / PLAN, json.dumps(plan, indent=1) + "\n")
    accelerator.wait_for_everyone()
    if (out / MANIFEST).is_file():
        accelerator.print(f"token cache {out} is already complete")
        return read_json(out / MANIFEST)

    shards = [
        range(start, min(start + cfg.shard_clips, cfg.num_clips)) for start in range(0, cfg.num_clips, cfg.shard_clips)
    ]
    mine = [
        i
        for i in range(accelerator.process_index, len(shards), accelerator.num_processes)
        if not (out / shard_name(i)).is_file()
    ]
    bar = tqdm(
        total=sum(len(shards[i]) for i in mine),
        desc="tokenizing clips",
        unit="clip",
        disable=not accelerator.is_main_process,
    )
    device = accelerator.device
    tokenizer.to(device).eval()
    for index in mine:
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(shards[index].start, shards[index].stop, cfg.batch_size):
            batch = default_collate([dataset[i] for i in range(start, min(start + cfg.batch_size, shards[index].stop))])
            frames = batch["frames"].to(device)
            with accelerator.autocast():
                tokens, features = tokenizer.tokenize(frames)
            parts.setdefault("tokens", []).append(tokens.float().cpu().to(DTYPES[cfg.dtype]))
            if plan["summary_grid"]:
                summaries = summarize(features, tokenizer.grid(frames), plan["summary_grid"])
                parts.setdefault("summaries", []).append(summaries.float().cpu().to(DTYPES[cfg.dtype]))
            for key in ("timestamps", "actions"):
                if key in batch:
                    parts.setdefault(key, []).append(batch[key].float())
            bar.update(len(batch["frames"]))
        save_safetensors(
            {k: torch.cat(v) for k, v in parts.items()},
            out / shard_name(index),
            metadata={"tokenizer": plan["tokenizer"]},
        )
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = []
        for index, clips in enumerate(shards):
            with safe_open(out / shard_name(index), "pt") as shard:
                shape = shard.get_slice("tokens").get_shape()
            files.append(
                {"file": shard_name(index), "clips": len(clips), "bytes": (out / shard_name(index)).stat().st_size}
            )
        manifest = {
            **plan,
            "num_frames": shape[1],
            "dim": shape[2],
            "shards": files,
            "bytes": sum(f["bytes"] for f in files),
        }
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    accelerator.wait_for_everyone()
    return read_json(out / MANIFEST)


def _check_out(out: Path, plan: dict, overwrite: bool) -> bool | None:
    """None when `out` already holds this very cache (complete or partial); else whether another must be replaced first.

    An empty or missing `out` is fine; another cache is replaced only with `overwrite`; anything else is refused.
    """
    if (out / PLAN).is_file():
        held = read_json(out / PLAN)
        if held == plan:
            return None
        if not overwrite:
            differs = sorted(key for key in set(held) | set(plan) if held.get(key) != plan.get(key))
            raise ConfigError(
                f"{out} holds a token cache of another configuration (differs in {', '.join(differs)}); pass "
                "cache.overwrite=true or another cache.out"
            )
        return True
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty and holds no token cache; pass another cache.out")
    return False


def main(argv: list[str] | None = None) -> None:
    make_token_cache(parse_run_config(WorldModelRunConfig, __doc__, "configs/world_model/tiny.yaml", argv))


def make_token_cache(run: DictConfig) -> None:
    """Tokenize `cache.num_clips` clips of a merged `WorldModelRunConfig` into `cache.out`: the command, after
    reading its arguments."""
    cfg, data = to_object(run.cache), to_object(run.data)
    if data.source == TOKENS_SOURCE:
        raise ConfigError(
            f"data.source={TOKENS_SOURCE} reads a cache; give the source of frames to tokenize (e.g. "
            "data.source=shapes)"
        )
    tokenizer = to_object(run.tokenizer).load()
    cpu = launched_on_cpu()
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision())
    plan = {
        "format": 1,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "tokenizer_checkpoint": run.tokenizer.checkpoint,
        "data": OmegaConf.to_container(run.data),
        "seed": run.seed,
        "num_clips": cfg.num_clips,
        "shard_clips": cfg.shard_clips,
        "dtype": cfg.dtype,
        # The readout's training targets: pooled features of every frame (0 = none).
        "summary_grid": run.model.readout.grid if run.model.readout.enabled else 0,
    }
    manifest = write_token_cache(
        tokenizer, build_dataset(data, "train", run.seed, tokenizer=tokenizer), cfg, plan, accelerator
    )
    accelerator.print(
        f"token cache {cfg.out}: {manifest['num_clips']} clips of {manifest['num_frames']} frames, "
        f"{manifest['bytes'] / 2**20:.1f} MiB ({manifest['bytes'] / manifest['num_clips'] * 1000 / 2**20:.2f} MiB "
        "per 1,000 clips)"
    )


if __name__ == "__main__":
    run_cli(main)
