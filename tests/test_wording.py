"""The prose says what is true of the code, not when or where it was written: no wording that dates a
statement or ties it to one computer or one round of work (e.g. a figure described as from "the newest"
attempt rather than by its recipe and hardware), since such wording goes stale the moment it is read.
Checked: README.md, docs/*.md, configs/**/*.yaml, and the comments and docstrings of every Python file
in the repository (identifiers and other string literals are code, not prose)."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

from conftest import REPO

WORDING = [
    re.compile(r"\bsessions?\b", re.I),
    re.compile(r"\btoday'?s?\b", re.I),
    re.compile(r"\byesterday\b", re.I),
    re.compile(r"\blast (session|run|time)\b", re.I),
    re.compile(r"\bprevious (session|recipe|run|version|commit)\b", re.I),
    re.compile(r"\blatest\b", re.I),
    re.compile(r"\b[Mm]achine [A-D]\b"),  # the letter stays upper-case: "machine a" is ordinary prose
    re.compile(r"\b(this|another|that) machine\b", re.I),
    re.compile(r"\btargets? (met|reached|missed)\b", re.I),
    re.compile(r"\bmet by\b", re.I),
    re.compile(r"\bat commit [0-9a-f]{7,40}\b", re.I),
]

# Technical uses the patterns would otherwise catch, removed from a line before it is checked. Identifiers
# need no entry: `\b` does not split a name at an underscore, so latest_checkpoint never matches.
ALLOWED = [
    re.compile(r"""scope=["']session["']"""),  # pytest's fixture scope, in a code example
]

# Folders that hold no project prose: environments, run outputs, build products.
SKIPPED_DIRS = {".git", ".venv", "venv", "runs", "build", "dist", "__pycache__", ".pytest_cache"}


def _files() -> list[Path]:
    """Tracked files and new ones git does not ignore; without git, a walk that skips SKIPPED_DIRS."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        paths = [REPO / name for name in listed]
    except (OSError, subprocess.CalledProcessError):
        paths = [path for path in REPO.rglob("*") if not SKIPPED_DIRS & set(path.relative_to(REPO).parts)]
    return sorted(path for path in paths if path.is_file())


def checked_files() -> list[Path]:
    def wanted(path: Path) -> bool:
        parts = path.relative_to(REPO).parts
        if SKIPPED_DIRS & set(parts):
            return False
        if path.suffix == ".py" or parts == ("README.md",):
            return True
        if parts[0] == "docs" and len(parts) == 2 and path.suffix == ".md":
            return True
        return parts[0] == "configs" and path.suffix == ".yaml"

    return [path for path in _files() if wanted(path)]


def python_prose(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring line of a Python file: a string literal counts when it
    stands alone as a statement (module, class and function docstrings, and the same form anywhere else)."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            docstrings.add((node.value.lineno, node.value.col_offset))
    lines = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT or (token.type == tokenize.STRING and token.start in docstrings):
            for offset, text in enumerate(token.string.splitlines()):
                lines.append((token.start[0] + offset, text))
    return lines


def prose_lines(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".py":
        return python_prose(text)
    return list(enumerate(text.splitlines(), start=1))


def violations(path: Path) -> list[str]:
    found = []
    for line, text in prose_lines(path):
        for allowed in ALLOWED:
            text = allowed.sub("", text)
        for pattern in WORDING:
            for match in pattern.finditer(text):
                found.append(f"{path.relative_to(REPO)}:{line}: {match.group(0)!r} in {text.strip()[:140]!r}")
    return found


def test_patterns_catch_the_wording_and_spare_identifiers():
    def caught(text: str) -> bool:
        return any(pattern.search(text) for pattern in WORDING)

    for text in (
        "as measured today",
        "on machine B",
        "this machine's peak",
        "targets met",
        "at commit 1a2b3c4",
        "the latest run",
    ):
        assert caught(text), text
    for text in ("latest_checkpoint(folder)", "the previous frame", "a machine a user owns", "the newest checkpoint"):
        assert not caught(text), text
    source = '"""Module text."""\n\nlatest = 1  # a comment\nx = "latest"\n\n\ndef f():\n    """Function text."""\n'
    assert python_prose(source) == [(1, '"""Module text."""'), (3, "# a comment"), (8, '"""Function text."""')]


def test_no_wording_about_the_circumstances_of_writing():
    found = [hit for path in checked_files() for hit in violations(path)]
    if found:
        pytest.fail(
            "wording that dates the text or ties it to one computer (say what is true instead):\n" + "\n".join(found),
            pytrace=False,
        )
