"""Where the tests find the published implementation's reference vectors.

`python -m benchmarks.reference_vectors --published CHECKOUT` makes them from a checkout of the published code
(into tests/reference/ unless `--out` says otherwise). The tests read, in this order: the folder
`$DELTAWORLD_REFERENCE_DIR` names (only it, when set), tests/reference/, and ../shared/golden beside the
clone, where CI keeps the vectors it checks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ENV = "DELTAWORLD_REFERENCE_DIR"
IN_REPO = REPO / "tests" / "reference"
CI = REPO.parent / "shared" / "golden"
COMMAND = "python -m benchmarks.reference_vectors --published PATH/TO/deltatok-checkout"


def search_dirs() -> list[Path]:
    if os.environ.get(ENV):
        return [Path(os.environ[ENV]).expanduser()]
    return [IN_REPO, CI]


def find_reference(name: str) -> Path | None:
    return next((folder / name for folder in search_dirs() if (folder / name).is_file()), None)


def load_reference(name: str) -> dict:
    """The reference file `name` as plain tensors, or a skip that says how to make it."""
    path = find_reference(name)
    if path is None:
        looked = ", ".join(str(folder) for folder in search_dirs())
        pytest.skip(f"reference vectors {name} not found in {looked}; make them with `{COMMAND}`")
    return torch.load(path, map_location="cpu", weights_only=True)
