"""Files that cannot give a clip: one exception type, and a warning once per file per process."""

from __future__ import annotations

import logging
from pathlib import Path

from tokenizer.runtime.errors import DataError

logger = logging.getLogger(__name__)

# Paths already warned about in this process; DataLoader workers each keep their own.
_warned: set[str] = set()


class UnusableSource(DataError):
    """A video, frame folder or image that cannot be read, or holds too few frames for a clip."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"skipping {path}: {reason}")
        self.path = str(path)
        self.reason = reason


def warn_unusable(error: UnusableSource) -> None:
    """Log `error` the first time its file fails in this process."""
    if error.path not in _warned:
        _warned.add(error.path)
        logger.warning("%s", error)
