"""docs/configuration.md is what the generator makes of the config dataclasses, and misses no key, command or
shipped config: anyone who changes a schema or its comments regenerates it, or this fails and says how."""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import REPO
from tokenizer.runtime.config import schema_keys
from tools import config_docs

REGENERATE = f"regenerate it with `{config_docs.REGENERATE}`"


@pytest.fixture(scope="module")
def generated() -> str:
    return config_docs.generate()


def test_committed_reference_is_current(generated):
    committed = config_docs.OUTPUT.read_text() if config_docs.OUTPUT.is_file() else ""
    if committed != generated:
        old, new = committed.splitlines(), generated.splitlines()
        line = next((n for n, (a, b) in enumerate(zip(old, new)) if a != b), min(len(old), len(new)))
        first = new[line] if line < len(new) else "(end of file)"
        pytest.fail(
            f"docs/configuration.md differs from the config dataclasses from line {line + 1} ({first[:120]!r}); "
            f"{REGENERATE}"
        )


def test_every_schema_key_is_documented(generated):
    for command in config_docs.COMMANDS:
        keys = schema_keys(config_docs.schema_of(command))
        absent = [key for key in keys if f"`{key}`" not in generated]
        assert not absent, f"{command.title}: keys missing from the generated reference: {absent}"


def _tracked_python_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "*.py"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", "runs", "build", "dist", ".git"}
        return [path for path in REPO.rglob("*.py") if not skip & set(path.relative_to(REPO).parts)]
    return [REPO / name for name in listed]


# The functions that turn a command line into a command's typed config; a call whose schema is a parameter of the
# function around it forwards that parameter (parse_bench_config), and the command is where that function is called.
COMMAND_PARSERS = {"parse_run_config", "parse_bench_config"}


def _command_schemas(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, schema name) of every call of a command parser in `tree` whose schema is a name of its own."""
    forwarded = set()
    for function in ast.walk(tree):
        if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            params = {arg.arg for arg in function.args.args + function.args.kwonlyargs}
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and node.args and getattr(node.args[0], "id", None) in params:
                    forwarded.add(node)
    return [
        (node.lineno, node.args[0].id)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) in COMMAND_PARSERS
        and node.args
        and isinstance(node.args[0], ast.Name)
        and node not in forwarded
    ]


def test_every_command_is_documented():
    """A new command (a call of a command parser outside the tests) needs its entry in config_docs.COMMANDS."""
    documented = {command.schema.partition(":")[2] for command in config_docs.COMMANDS}
    undocumented = []
    for path in _tracked_python_files():
        if path.relative_to(REPO).parts[0] == "tests" or not path.is_file():
            continue
        for line, schema in _command_schemas(ast.parse(path.read_text())):
            if schema not in documented:
                undocumented.append(f"{path.relative_to(REPO)}:{line} ({schema})")
    assert not undocumented, (
        f"commands missing from tools.config_docs.COMMANDS: {undocumented}; add them, then {REGENERATE}"
    )


def test_a_command_behind_a_wrapper_is_still_found():
    """The check sees through a wrapper that forwards its schema, and still names an undocumented command."""
    tree = ast.parse(
        "def parse_bench_config(schema, doc):\n"
        "    return parse_run_config(schema, doc)\n"
        "cfg = parse_bench_config(NewBenchConfig, __doc__)\n"
    )
    assert _command_schemas(tree) == [(3, "NewBenchConfig")]


def test_every_shipped_config_is_listed(generated):
    unlisted = [path.relative_to(REPO).as_posix() for path in sorted((REPO / "configs").rglob("*.yaml"))]
    unlisted = [name for name in unlisted if f"]({'../' + name})" not in generated]
    assert not unlisted, (
        f"configs no command lists as an example: {unlisted}; give their command a `configs` glob in "
        "config_docs.COMMANDS"
    )


# --- how descriptions are read ------------------------------------------------------------------------


@dataclass
class _Inner:
    """Inner section."""

    size: int = 3  # the size


@dataclass
class _Base:
    out: str = "o"  # where it goes
    # A block above the field,
    # two lines long.
    steps: int = 1  # and its own line
    # Separated from the field by a blank line, so not its description.

    bare: bool = False


@dataclass
class _Run(_Base):
    out: str = "p"
    pairs: list[int] = field(  # kept across lines
        default_factory=lambda: [1, 2]
    )
    inner: _Inner = field(default_factory=_Inner)  # the inner part


def test_descriptions_come_from_the_fields_comments():
    from omegaconf import OmegaConf

    root = config_docs.walk(_Run, OmegaConf.structured(_Run))
    described = {key.key: key.description for section in config_docs.sections(root) for key in section.keys}
    assert described == {
        "out": "where it goes",  # redeclared without a comment: the base's
        "steps": "A block above the field, two lines long. And its own line.",
        "bare": "",
        "pairs": "kept across lines",
        "inner.size": "the size",
    }
    defaults = {key.key: key.default for section in config_docs.sections(root) for key in section.keys}
    assert (defaults["out"], defaults["pairs"], defaults["bare"]) == ('"p"', "[1, 2]", "false")
    (inner,) = root.children
    assert inner.description == "The inner part. Inner section."
    assert [field.name for field in dataclasses.fields(_Run)] == ["out", "steps", "bare", "pairs", "inner"]


def test_check_reports_a_stale_file_in_one_line(tmp_path, monkeypatch, capsys, generated):
    stale = tmp_path / "configuration.md"
    stale.write_text(generated + "stale\n")
    monkeypatch.setattr(config_docs, "OUTPUT", stale)
    assert config_docs.main(["--check"]) == 1
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and config_docs.REGENERATE in message
    assert config_docs.main(["--write"]) == 0 and stale.read_text() == generated
    assert config_docs.main(["--check"]) == 0


def test_importing_the_generator_stays_light():
    code = "import sys, tools.config_docs; print(sorted({'torch', 'transformers', 'omegaconf'} & set(sys.modules)))"
    heavy = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert heavy == "[]"
