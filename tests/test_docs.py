"""The documentation's examples run. Every fenced block that README.md or docs/*.md marks with
`<!-- docs-test: NAME -->` is executed here as written, with the stand-ins NAME names substituted
for what a CPU test cannot have: released weights (tiny reference-sized ones in an offline Hub
cache), datasets (miniature trees), and sizes meant for a GPU."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from conftest import REPO
from footage import make_cityscapes, make_kitti, make_vspw, write_video

from tokenizer.backbone import PAPER_BACKBONE
from tokenizer.model import Tokenizer
from tokenizer.released import RELEASED
from tokenizer.runtime.hub import resolve

sys.path.insert(0, str(REPO))
import rollout  # noqa: E402

MARK = re.compile(r"<!-- docs-test: ([\w-]+) -->\n```(\w+)\n(.*?)```", re.S)
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
TESTED = ("released",)


def marked_blocks(name: str | None = None) -> list[tuple[str, str, str]]:
    """(name, language, code) of every marked block, in document order."""
    blocks = [match.groups() for path in DOCS for match in MARK.finditer(path.read_text())]
    return [block for block in blocks if name is None or block[0] == name]


def commands(script: str) -> list[list[str]]:
    """A bash block's commands, continuation lines joined, comments dropped."""
    joined = script.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]


def test_every_marked_block_has_a_runner():
    found = marked_blocks()
    assert found, "no marked examples found in README.md / docs"
    assert {name for name, _, _ in found} <= set(TESTED)
    assert {language for _, language, _ in found} <= {"bash", "python"}


def hf_download(args: list[str], cache: Path) -> None:
    """`hf download ID [--local-dir DIR]` against the offline cache: the id must be one the package knows;
    a local-dir copy is made from the cached snapshot, as the Hub's client makes it."""
    repo_id = args[0]
    assert repo_id in RELEASED or repo_id == PAPER_BACKBONE, repo_id
    snapshot = resolve(repo_id, "example")
    if "--local-dir" in args:
        target = Path(args[args.index("--local-dir") + 1])
        shutil.copytree(snapshot, target)
        if RELEASED[repo_id].kind == "tokenizer":
            Tokenizer.from_pretrained(target)  # the folder keeps the repo's name, by which it is recognised


def test_released_model_examples(tiny_released, tmp_path, monkeypatch):
    make_vspw(tmp_path / "VSPW", num_frames=45)
    make_kitti(tmp_path / "KITTI")
    make_cityscapes(tmp_path / "Cityscapes")
    for name in ("a", "b"):
        write_video(tmp_path / "my_videos" / f"{name}.mp4", num_frames=40)
    write_video(tmp_path / "my_clip.mp4", num_frames=40)
    # The stand-ins' backbone has 16-pixel patches like DINOv3 ViT-B/16, at 64 px instead of 512.
    substitutions = {f"/data/{name}": str(tmp_path / name) for name in ("VSPW", "Cityscapes", "KITTI")} | {"512": "64"}
    monkeypatch.chdir(tmp_path)
    blocks = marked_blocks("released")
    assert len(blocks) >= 3
    for _, language, code in blocks:
        for old, new in substitutions.items():
            code = code.replace(old, new)
        if language == "python":
            exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
            continue
        for command in commands(code):
            if command[:2] == ["hf", "download"]:
                hf_download(command[2:], tiny_released)
            elif command[:2] == ["python", "rollout.py"]:
                rollout.main(command[2:])
            else:
                pytest.fail(f"no stand-in runs {' '.join(command)!r}")
    for out in ("runs/from-folders", "runs/vspw", "runs/cityscapes", "runs/kitti", "runs/mine"):
        assert (tmp_path / out / "report.json").is_file() and (tmp_path / out / "clip0.png").is_file(), out
    assert (tmp_path / "futures.png").stat().st_size > 0
