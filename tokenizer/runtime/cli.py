"""Command-line entry: a user's mistake is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

import torch
from omegaconf import DictConfig

from tokenizer.runtime.config import load_config
from tokenizer.runtime.errors import DeltaWorldError

USER_ERROR_EXIT = 2


def run_cli(main: Callable[[], None]) -> None:
    try:
        main()
    except DeltaWorldError as err:
        # Under `accelerate launch` every process may report; the rank tells them apart.
        rank = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"{rank}error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


def parse_run_config(schema: Any, description: str, example: str, argv: list[str] | None) -> DictConfig:
    """`--config FILE [dotted.key=value ...]`, as every training script takes it -> the validated run config."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help=f"YAML run config, e.g. {example}")
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as train.max_steps=100")
    args = parser.parse_args(argv)
    return load_config(schema, args.config, args.overrides)


def resolve_device(name: str) -> torch.device:
    """A `--device` / `device:` value: "auto" is the GPU when there is one, else the CPU."""
    return torch.device(name if name != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
