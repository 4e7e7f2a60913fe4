"""Running the train scripts as a user does, in their own process, on micro models; and reading what they print."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import train_tokenizer as tokenizer_script
from conftest import MICRO_TOKENIZER, REPO
from tokenizer.runtime.cli import run_cli
from tokenizer.runtime.run_folder import LOSS_LOG

PYTHON = sys.executable
ACCELERATE = str(Path(PYTHON).with_name("accelerate"))
TOKENIZER_CONFIG = "configs/tokenizer/tiny.yaml"
WORLD_CONFIG = "configs/world_model/tiny.yaml"
# A world model to match the micro tokenizer: head size 16 = RoPE 12 + 4 unrotated.
MICRO_WORLD = [
    "model.predictor.hidden_size=32",
    "model.predictor.num_layers=1",
    "model.predictor.num_heads=2",
    "model.predictor.rope_axis_sizes=[12]",
    "model.objective.num_hypotheses=8",
    "model.objective.selection_chunk=8",
    "model.num_samples=2",
    "data.frame_size=32",
    "data.num_frames=4",
    "data.val_clips=4",
    "eval.context=2",
    "train.batch_size=4",
    "train.log_every=1",
    "train.trackers=[]",
]


def run_script(script: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, script, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def train_tokenizer(output_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_script(
        "train_tokenizer.py", "--config", TOKENIZER_CONFIG, *MICRO_TOKENIZER, f"output_dir={output_dir}", *overrides
    )


def refused_in_process(output_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`train_tokenizer.py` on the micro config in this process, for runs refused before they start: the exit
    status and output of the command line (run_cli's), without the second of starting Python each time."""
    stdout, stderr, status = io.StringIO(), io.StringIO(), 0
    argv = ["--config", str(REPO / TOKENIZER_CONFIG), *MICRO_TOKENIZER, f"output_dir={output_dir}", *overrides]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            run_cli(lambda: tokenizer_script.main(argv))
        except SystemExit as exit:
            status = exit.code
    return subprocess.CompletedProcess(argv, status, stdout.getvalue(), stderr.getvalue())


def train_world(output_dir: Path, tokenizer: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_script(
        "train_world_model.py",
        "--config",
        WORLD_CONFIG,
        *MICRO_WORLD,
        f"tokenizer.checkpoint={tokenizer}",
        f"output_dir={output_dir}",
        *overrides,
    )


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2 and one `error:` line on stderr naming every fragment; no traceback."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def losses(output_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (output_dir / LOSS_LOG).read_text().splitlines())}
