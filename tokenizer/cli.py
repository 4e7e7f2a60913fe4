"""Command-line entry: a user's mistake is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import os
import sys
from typing import Callable

from tokenizer.errors import DeltaWorldError

USER_ERROR_EXIT = 2


def run_cli(main: Callable[[], None]) -> None:
    try:
        main()
    except DeltaWorldError as err:
        # Under `accelerate launch` every process may report; the rank tells them apart.
        rank = f"[rank {os.environ['RANK']}] " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        print(f"{rank}error: {err}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)
