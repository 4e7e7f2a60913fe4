"""The documentation's examples cannot rot: every fenced ```bash and ```python block of README.md and
docs/*.md is checked, and run unless it says otherwise.

Checked, every block: Python parses and its imports resolve; every shell command is one a user can
type here: a `make` target of the Makefile, an extra of pyproject.toml, a released id for `hf download`,
or a command (`python SCRIPT.py`, `python -m MODULE`, `accelerate launch ... SCRIPT.py`) whose flags and
dotted config keys its own parser accepts.

Run, as written, unless the line before the fence names a runner, the one visible mark of a block
that needs what a CPU test cannot have:
  <!-- docs-test: released -->  released weights: tiny stand-ins in an offline Hub cache, miniature datasets
  <!-- docs-test: tiny -->      runs of minutes: the same commands on micro models, a few steps, stand-in videos
  <!-- docs-test: check -->     GPUs, real datasets, hours: checked only
  <!-- docs-test: swm -->       stable-worldmodel's harness: run by tests/test_stable_worldmodel.py in .venv-swm, the
                                only venv where its imports resolve (its commands are checked here)
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
import torch
from accelerate.commands.launch import launch_command_parser

from conftest import MICRO_TOKENIZER, REPO, micro_tokenizer_config
from footage import make_cityscapes, make_kitti, make_vspw, write_video
from test_rollout import micro_world
from tokenizer.backbone import PAPER_BACKBONE
from tokenizer.model import Tokenizer
from tokenizer.released import RELEASED
from tokenizer.runtime.hub import resolve
from worldmodel.heads import DepthHead, SegmentationHead, TaskHeads
from worldmodel.rgb_head import RGBHead, RGBHeadConfig

sys.path.insert(0, str(REPO))

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNERS = ("released", "tiny", "check", "swm")
FENCE = re.compile(r"^```(\w*)\s*$")
MARK = re.compile(r"^<!-- docs-test: ([\w-]+) -->$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    runner: str | None  # None: run as written
    code: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(runner=...) -> list[Block]:
    """Every bash and python block in document order; those of one runner (None: the unmarked) when given."""
    found = []
    for path in DOCS:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            opening = FENCE.match(lines[i])
            if not opening:
                i += 1
                continue
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            mark = MARK.match(lines[i - 1]) if i > 0 else None
            if opening.group(1) in ("bash", "python"):
                found.append(
                    Block(
                        path,
                        i + 1,
                        opening.group(1),
                        mark.group(1) if mark else None,
                        "\n".join(lines[i + 1 : end]) + "\n",
                    )
                )
            i = end + 1
    return [block for block in found if runner is ... or block.runner == runner]


def commands(script: str) -> list[list[str]]:
    """A bash block's commands, continuation lines joined, comments dropped."""
    joined = script.replace("\\\n", " ")
    return [words for line in joined.splitlines() if (words := shlex.split(line, comments=True))]


# ---- checks every block gets -------------------------------------------------------------------


class Parsed(Exception):
    """Raised in place of running a command, once its parser has accepted the arguments."""


MAKE_TARGETS = set(re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), re.M))
EXTRAS = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])


def script_module(words: list[str]) -> tuple[str, list[str]]:
    """`SCRIPT.py ARGS` or `-m MODULE ARGS` -> (module name, ARGS)."""
    if words[0] == "-m":
        return words[1], words[2:]
    assert words[0].endswith(".py") and (REPO / words[0]).is_file(), f"no script {words[0]}"
    return words[0][:-3], words[1:]


def parse_only(module_name: str, argv: list[str], monkeypatch) -> None:
    """Let the command's own parser read argv (flags, --config file, dotted keys), then stop."""
    module = importlib.import_module(module_name)
    # The project's parser when the command uses it (flags and config keys), else argparse's.
    owner, name = (
        (module, "parse_run_config") if hasattr(module, "parse_run_config") else (argparse.ArgumentParser, "parse_args")
    )
    real = getattr(owner, name)

    def parse_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise Parsed

    with monkeypatch.context() as patch:
        patch.setattr(owner, name, parse_then_stop)
        with pytest.raises(Parsed):
            module.main(argv)


def check_command(words: list[str], configs: dict[str, str], monkeypatch) -> None:
    """One shell command, checked without running it. `configs`: the last --config each module was
    given in this block, which stands in for a run folder's config.yaml that only a real run writes."""
    if words[0] == "make":
        assert all(target in MAKE_TARGETS for target in words[1:] if "=" not in target), words
        return
    if words[:2] == ["pip", "install"]:
        for spec in words[2:]:
            extras = re.fullmatch(r"\.\[([\w,-]+)\]", spec)
            assert spec == "-e" or (extras and set(extras.group(1).split(",")) <= EXTRAS), spec
        return
    if words[:2] == ["hf", "download"]:
        assert words[2] in RELEASED or words[2] == PAPER_BACKBONE, words[2]
        return
    if words[:2] == ["accelerate", "launch"]:
        args = launch_command_parser().parse_args(words[2:])
        words = ["python", args.training_script, *args.training_script_args]
    assert words[0] == "python", f"no check for {' '.join(words)!r}"
    module, argv = script_module(words[1:])
    if module == "pytest":
        assert all((REPO / arg.split("::")[0]).exists() for arg in argv if not arg.startswith("-")), argv
        return
    if "--config" in argv:
        at = argv.index("--config") + 1
        if not (REPO / argv[at]).is_file() and module in configs:
            argv[at] = configs[module]
        configs[module] = argv[at]
    parse_only(module, argv, monkeypatch)


def check_python(block: Block) -> None:
    """Parses, and every import in it resolves."""
    tree = ast.parse(block.code, str(block))
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    exec(compile(ast.Module(imports, type_ignores=[]), str(block), "exec"), {})


def test_every_block_is_checked_and_has_a_runner(monkeypatch):
    found = blocks()
    assert len(found) >= 10, "README.md and docs/ hold fewer examples than expected: is the fence pattern right?"
    unknown = [f"{block}: {block.runner}" for block in found if block.runner not in (None, *RUNNERS)]
    assert not unknown, f"unknown runners (known: {RUNNERS}): {unknown}"
    monkeypatch.chdir(REPO)
    for block in found:
        if block.language == "python":
            if block.runner != "swm":  # stable_worldmodel imports only in .venv-swm, where its test runs the block
                check_python(block)
            continue
        configs: dict[str, str] = {}
        for words in commands(block.code):
            try:
                check_command(words, configs, monkeypatch)
            except (Exception, SystemExit) as err:  # argparse exits; the config loader raises
                raise AssertionError(
                    f"{block}: {' '.join(words)!r} does not check: {type(err).__name__}: {err}"
                ) from None


# ---- runners -------------------------------------------------------------------------------------


def run_command(words: list[str], extra: dict[str, list[str]] | None = None) -> None:
    """A `python SCRIPT.py` / `python -m MODULE` command, in this process, with `extra` arguments per module."""
    assert words[0] == "python", f"no stand-in runs {' '.join(words)!r}"
    module, argv = script_module(words[1:])
    importlib.import_module(module).main(argv + (extra or {}).get(module, []))


def run_blocks(
    found: list[Block], substitutions: dict[str, str], extra: dict[str, list[str]] | None = None, special=None
) -> None:
    for block in found:
        code = block.code
        for old, new in substitutions.items():
            code = code.replace(old, new)
        if block.language == "python":
            exec(compile(code, str(block), "exec"), {"__name__": "docs_example"})
            continue
        for words in commands(code):
            if not (special and special(words)):
                run_command(words, extra)


def test_unmarked_blocks_run_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    run_blocks(blocks(None), {})


def hf_download(args: list[str]) -> None:
    """`hf download ID [--local-dir DIR]` against the offline cache: a local-dir copy is made from the
    cached snapshot, as the Hub's client makes it."""
    snapshot = resolve(args[0], "example")
    if "--local-dir" in args:
        target = Path(args[args.index("--local-dir") + 1])
        shutil.copytree(snapshot, target)
        if RELEASED[args[0]].kind == "tokenizer":
            Tokenizer.from_pretrained(target)  # the folder keeps the repo's name, by which it is recognised


def stand_in_videos(folder: Path) -> None:
    for name in ("a", "b", "c", "d", "e"):
        write_video(folder / f"{name}.mp4", num_frames=40)


def test_released_model_examples(tiny_released, tmp_path, monkeypatch):
    make_vspw(tmp_path / "VSPW", num_frames=45)
    make_kitti(tmp_path / "KITTI")
    make_cityscapes(tmp_path / "Cityscapes")
    stand_in_videos(tmp_path / "my_videos")
    write_video(tmp_path / "my_clip.mp4", num_frames=40)
    # The stand-ins' backbone has 16-pixel patches like DINOv3 ViT-B/16, at 64 px instead of 512.
    substitutions = {f"/data/{name}": str(tmp_path / name) for name in ("VSPW", "Cityscapes", "KITTI")} | {"512": "64"}
    monkeypatch.chdir(tmp_path)
    found = blocks("released")
    assert len(found) >= 3

    def download(words: list[str]) -> bool:
        if words[:2] == ["hf", "download"]:
            hf_download(words[2:])
            return True
        return False

    run_blocks(found, substitutions, special=download)
    for out in ("runs/from-folders", "runs/vspw", "runs/cityscapes", "runs/kitti", "runs/mine"):
        assert (tmp_path / out / "report.json").is_file() and (tmp_path / out / "clip0.png").is_file(), out
    assert (tmp_path / "runs/my_clip/futures.png").is_file() and (tmp_path / "runs/my_clip/futures.gif").is_file()
    assert (tmp_path / "futures.png").stat().st_size > 0 and (tmp_path / "futures.gif").is_file()


# A few steps of micro models: what the tiny recipe's commands do, in seconds.
MICRO_PREDICTOR = [
    "model.predictor.hidden_size=32",
    "model.predictor.num_layers=1",
    "model.predictor.num_heads=2",
    "model.predictor.rope_axis_sizes=[12]",
    "model.predictor.rope_unrotated_size=4",
    "model.objective.num_hypotheses=4",
    "model.objective.selection_chunk=4",
]
MICRO_WORLD_RUN = MICRO_PREDICTOR + ["train.max_steps=2", "train.batch_size=4", "data.val_clips=2", "train.trackers=[]"]
TINY_EXTRA = {
    # feature_pool stays as the tiny recipe sets it (32,768): cut to the 8 clips two steps draw.
    "train_tokenizer": [item for item in MICRO_TOKENIZER if not item.startswith("feature_pool")]
    + ["train.max_steps=2"],
    "worldmodel.token_cache": MICRO_PREDICTOR + ["cache.num_clips=8"],
    "train_world_model": MICRO_WORLD_RUN,
    "rollout": ["--val-clips", "2", "--samples", "2", "--context", "2"],
    "envs.recording": ["--episodes", "3", "--max-steps", "12"],
}


def save_demo_stand_ins(runs: Path) -> None:
    """What `make demo` leaves that the examples load: the tokenizer, the world model and the heads (RGB included)."""
    torch.manual_seed(0)
    tokenizer = Tokenizer.build(micro_tokenizer_config()).eval()
    tokenizer.save_pretrained(runs / "tokenizer_tiny" / "final")
    micro_world(tokenizer).save_pretrained(runs / "world_model_tiny" / "final")
    rgb = RGBHead(
        tokenizer.dim, tokenizer.backbone.feature_norm, RGBHeadConfig(32, 1, 2, 64, patch_size=8, image_size=64)
    )
    TaskHeads(SegmentationHead(tokenizer.dim, 5), DepthHead(tokenizer.dim, 1.0, 16.0), rgb).save(runs / "heads_tiny")


def test_tiny_examples(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    stand_in_videos(tmp_path / "my_videos")
    write_video(tmp_path / "my_clip.mp4", num_frames=40)
    save_demo_stand_ins(tmp_path / "runs")
    found = blocks("tiny")
    assert len(found) >= 3
    run_blocks(found, {"range(40)": "range(3)"}, TINY_EXTRA)
    assert (tmp_path / "runs/my_rollout/report.json").is_file()
    assert (tmp_path / "runs/my_clip_futures/futures.png").is_file() and (tmp_path / "futures.gif").is_file()
    assert (tmp_path / "runs/shapes_world/final").is_dir() and (tmp_path / "futures.png").stat().st_size > 0
