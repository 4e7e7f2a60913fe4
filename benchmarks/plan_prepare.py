"""What the plan bench plans with, each made only when missing from its output folder: the recorded episodes of
the env, the same episodes in action blocks, the tokenizer and the action-conditioned world models (DeltaWorld
from a token cache, DINOWorld from frames). `train_models` serves `benchmarks.swm_protocol` too."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from benchmarks.plan_config import PlanBenchConfig, TrainSection
from benchmarks.timing import Phases
from envs import goal_reaching as gr
from envs.recording import headless_rendering, record
from tokenizer.data.episodes import EPISODE_GLOB, episode_files
from tokenizer.model import TokenizerSource
from tokenizer.run_config import TokenizerRunConfig
from tokenizer.runtime.cli import Flag, parse_run_config
from tokenizer.runtime.config import load_config, to_object
from tokenizer.runtime.hub import existing_source, is_repo_id
from train_tokenizer import train_tokenizer
from train_world_model import train_world_model
from worldmodel.run_config import WorldModelRunConfig
from worldmodel.token_cache import make_token_cache

REPO = Path(__file__).resolve().parents[1]


def in_repo(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else REPO / path


def parse_bench_config(schema: type, doc: str, default_config: str, argv: list[str] | None, out: str = "") -> Any:
    """A goal-reaching command's typed config: `--config FILE` (default `default_config`, under the repository),
    dotted overrides, and `--out DIR` setting `out` when `out` describes it; rendering set up headless first, since
    every one of them makes the env."""
    headless_rendering()
    flags = {"--out": Flag("out", out)} if out else {}
    return to_object(parse_run_config(schema, doc, default_config, argv, flags, str(REPO / default_config)))


def given_tokenizer(checkpoint: str | None, trained_on: str) -> str | None:
    """A run's `tokenizer.checkpoint`: an existing path (relative ones from the repository root), a Hub id as it
    is, or None (the run trains one on `trained_on`); a missing path is a CheckpointError naming the way out."""
    if checkpoint is None or (is_repo_id(checkpoint) and not in_repo(checkpoint).exists()):
        return checkpoint
    hint = f"give a tokenizer folder, file or Hub id, or null to train one on {trained_on}"
    return existing_source(str(in_repo(checkpoint)), "tokenizer.checkpoint", hint)


def run_config(
    schema: type, section: TrainSection, settings: dict[str, Any], fixed: dict[str, Any] | None = None
) -> DictConfig:
    """A training run's config: the section's file, then the bench's own `settings` (nested typed values: run
    folder, data, tokenizer, seed), then the section's dotted overrides, which may change any of them, then
    `fixed`, what the env dictates (the action size)."""
    return load_config(schema, in_repo(section.config), section.overrides, fixed, settings)


def record_episodes(cfg: PlanBenchConfig, folder: Path) -> None:
    """The `record` section's episodes of the env, into `folder`."""
    rec = cfg.record
    record(
        cfg.env,
        rec.episodes,
        folder,
        rec.policy,
        cfg.seed,
        rec.max_steps,
        rec.frame_size,
        dict(cfg.env_kwargs),
        rec.state_key,
        dict(rec.policy_kwargs),
    )


def prepare(cfg: PlanBenchConfig, out: Path, blocks: gr.ActionBlocks, phases: Phases) -> dict[str, Path]:
    """Recorded episodes, their action blocks, the tokenizer and both world models, each made only when missing."""
    recorded, episodes = out / "recorded", out / "episodes"
    if not any(recorded.glob(EPISODE_GLOB)):
        phases.start("record")
        print(
            f"recording {cfg.record.episodes} {cfg.record.policy}-policy episodes of {cfg.env} into {recorded}",
            flush=True,
        )
        record_episodes(cfg, recorded)
    # Refuse a non-deterministic env before spending minutes on training for it.
    phases.start("replay_check")
    with gr.make_env(cfg.env, dict(cfg.env_kwargs)) as env:
        gr.check_replay(env, gr.load_episode(gr.held_out(episode_files(recorded))[0]))
    if not any(episodes.glob(EPISODE_GLOB)):
        phases.start("action_blocks")
        gr.block_episodes(recorded, episodes, blocks)
    sections = {"deltaworld": cfg.deltaworld, "dinoworld": cfg.dinoworld}
    return train_models(
        out, episodes, cfg.record.frame_size, cfg.tokenizer, cfg.tokenizer_train, sections, blocks.dim, cfg.seed, phases
    )


def train_models(
    out: Path,
    episodes: Path,
    frame_size: int,
    tokenizer: TokenizerSource,
    tokenizer_train: TrainSection,
    sections: dict[str, TrainSection],
    action_dim: int,
    seed: int,
    phases: Phases,
) -> dict[str, Path]:
    """The tokenizer (`tokenizer.checkpoint`, or one trained with `tokenizer_train` on the `episodes` folder's frames
    into <out>/tokenizer) and each world model of `sections` ("deltaworld" from a token cache of the episodes,
    "dinoworld" from their frames), taking `action_dim`-D actions, into <out>/<name>; each made only when missing.
    Returns their final folders (or the tokenizer's checkpoint) by name, "tokenizer" among them."""
    frames = {"source": "episodes", "root": str(episodes), "frame_size": frame_size}
    if tokenizer.checkpoint is not None:  # resolved by the caller: an existing path or a Hub id
        trained = tokenizer.checkpoint
    else:
        trained = out / "tokenizer" / "final"
        if not trained.is_dir():
            phases.start("tokenizer")
            config = tokenizer_train.config
            print(f"training the tokenizer ({config}) on the episodes into {trained.parent}", flush=True)
            own = {"output_dir": str(trained.parent), "overwrite": True, "data": frames, "seed": seed}
            train_tokenizer(run_config(TokenizerRunConfig, tokenizer_train, own))
    models = {"tokenizer": trained}
    source = asdict(replace(tokenizer, checkpoint=str(trained)))
    for name, section in sections.items():
        models[name] = out / name / "final"
        if models[name].is_dir():
            continue
        own = {
            "output_dir": str(out / name),
            "overwrite": True,
            "data": dict(frames),
            "tokenizer": source,
            "seed": seed,
        }
        # The block's actions, concatenated, are the model's action, whatever the section's config says.
        actions = {"model": {"actions": {"dim": action_dim}}}
        if name == "deltaworld":
            # DeltaWorld trains on the episodes' tokens, tokenized once (worldmodel.token_cache).
            tokens = out / "tokens"
            phases.start("token_cache")
            print(f"tokenizing episode clips once into {tokens}", flush=True)
            cache = {**own, "cache": {"out": str(tokens), "overwrite": True}}
            make_token_cache(run_config(WorldModelRunConfig, section, cache, actions))
            own["data"] = {**frames, "source": "tokens", "root": str(tokens), "val_source": "episodes"}
            own["data"]["val_root"] = str(episodes)
        phases.start(name)
        print(f"training {name} ({section.config}) on the episodes", flush=True)
        train_world_model(run_config(WorldModelRunConfig, section, own, actions))
    phases.stop()
    return models
