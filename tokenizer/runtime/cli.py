"""Command-line entry: a user's mistake is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from tokenizer.runtime.config import load_config
from tokenizer.runtime.errors import ConfigError, DeltaWorldError, Interrupted


def run_cli(main: Callable[[], None]) -> None:
    # Under `accelerate launch` every process may report; the rank tells them apart.
    rank = f"[rank {os.environ.get('RANK', 0)}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    try:
        main()
    except DeltaWorldError as err:
        print(f"{rank}error: {err}", file=sys.stderr)
        sys.exit(err.exit_status)
    except KeyboardInterrupt:
        # Outside a training loop (which says where it stopped) Ctrl-C ends a command before it writes, or
        # between atomic writes: nothing half-written is left to name.
        print(f"{rank}error: interrupted (Ctrl-C)", file=sys.stderr)
        sys.exit(Interrupted.exit_status)


@dataclass(frozen=True)
class Flag:
    """Command-line sugar for one dotted config key: `--name VALUE` is `key=VALUE`."""

    key: str
    help: str
    type: Callable[[str], Any] = str
    nargs: str | None = None
    choices: tuple[str, ...] | None = None


def parse_run_config(
    schema: Any,
    description: str,
    example: str,
    argv: list[str] | None,
    flags: dict[str, Flag] | None = None,
    default_config: str | None = "",
) -> DictConfig:
    """`--config FILE [dotted.key=value ...] [--flag VALUE ...]` -> the validated run config.

    Every command takes its config this way: the schema's defaults, then the YAML file, then the dotted
    overrides, then the flags (sugar for the keys they name). An argument with "=" that is not a flag is
    an override, wherever it stands, so it never ends up in a flag's list of values. `default_config`:
    "" makes --config required, None means the schema's defaults, a path is read when --config is not given.
    """
    flags = flags or {}
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    known = ["--config", "--help", *flags]
    for arg in argv:
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name not in known:
            nearest = difflib.get_close_matches(name, known, n=1, cutoff=0.0)
            raise ConfigError(f"unknown flag {name}; did you mean {nearest[0]}?")
    parser = argparse.ArgumentParser(
        allow_abbrev=False,  # a flag is its whole name: an abbreviation would hide a renamed flag
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Any config key may be set as a dotted override, key.sub=value.",
    )
    parser.add_argument(
        "--config", required=default_config == "", default=default_config, help=f"YAML run config, e.g. {example}"
    )
    for name, flag in flags.items():
        if flag.type is bool:
            parser.add_argument(name, action="store_true", default=None, help=f"{flag.help} (sets {flag.key}=true)")
        else:
            parser.add_argument(
                name,
                type=flag.type,
                nargs=flag.nargs,
                choices=flag.choices,
                default=None,
                help=f"{flag.help} (sets {flag.key})",
            )
    parser.add_argument("overrides", nargs="*", help="dotted overrides such as key.sub=value")
    args = parser.parse_args([a for a in argv if a not in overrides])
    # Left over: words that are neither flags nor key=value; load_config names the first.
    overrides += args.overrides
    sugar: dict[str, Any] = {}
    for name, flag in flags.items():
        value = getattr(args, name.lstrip("-").replace("-", "_"))
        if value is not None:
            node = sugar
            *sections, leaf = flag.key.split(".")
            for section in sections:
                node = node.setdefault(section, {})
            node[leaf] = value
    return load_config(schema, args.config, overrides, sugar)


def resolve_device(name: str) -> torch.device:
    """A `--device` / `device:` value: "auto" is the GPU when there is one, else the CPU."""
    return torch.device(name if name != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
