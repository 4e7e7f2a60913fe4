"""The package layout's promises: dependencies point one way, and no module imports another in a cycle."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from tokenizer.runtime.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
# Each package may import only those listed before it.
LAYERS = ["tokenizer", "worldmodel", "envs"]
# Above every layer: the commands (the scripts at the root, benchmarks/) and tools/, which documents them. They may
# import any layer; no layer may import them.
TOP = ["benchmarks", "tools"]


def _modules(packages: list[str]) -> dict[str, Path]:
    found = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _scripts() -> dict[str, Path]:
    return {path.stem: path for path in sorted(ROOT.glob("*.py"))}


def _imports(path: Path, known: set[str], module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in known}


def _imports_by_name(source: str, known: set[str]) -> set[str]:
    """The project modules `source` imports by name at run time, through `importlib.import_module` or `__import__`:
    a string argument, and, when a call's argument is not a string, every string in the file that names a project
    module, alone or as "module:attribute" (the name reaches the call through a variable, as a command table
    holds it)."""
    nodes = list(ast.walk(ast.parse(source)))
    calls = [
        node
        for node in nodes
        if isinstance(node, ast.Call)
        and node.args
        and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
    ]
    strings = [node.value for node in nodes if isinstance(node, ast.Constant)]
    named = [call.args[0].value for call in calls if isinstance(call.args[0], ast.Constant)]
    if any(not isinstance(call.args[0], ast.Constant) for call in calls):
        named += strings
    return {value.partition(":")[0] for value in named if isinstance(value, str)} & known


MODULES = _modules(LAYERS)
# Every project module, the top floor's included: what a lower layer must not import, by statement or by name.
PROJECT = set(MODULES) | set(_modules(TOP)) | set(_scripts())


def _layer(name: str) -> int:
    package = name.split(".")[0]
    return LAYERS.index(package) if package in LAYERS else len(LAYERS)


def _upward(name: str, source: str, path: Path) -> list[str]:
    """What module `name` (source `source`, at `path`) imports from a layer above its own."""
    targets = _imports(path, PROJECT, module_level_only=False) | _imports_by_name(source, PROJECT)
    return [f"{name} imports {target}" for target in sorted(targets) if _layer(target) > _layer(name)]


def test_packages_import_only_layers_below_them():
    wrong = []
    for name, path in MODULES.items():
        wrong += _upward(name, path.read_text(), path)
    assert not wrong, wrong


def test_importing_by_name_counts_as_importing(tmp_path):
    # A module that imports the commands it documents by their names, as a generator of their reference would:
    # from tokenizer.runtime it reaches up to every layer and the top floor.
    source = """
import importlib

COMMANDS = ("rollout:RolloutRunConfig", "benchmarks.bench:BenchRunConfig", "envs.recording:FLAGS")


def schema(command):
    module, _, name = command.partition(":")
    return getattr(importlib.import_module(module), name)


def literal():
    return importlib.import_module("worldmodel.world"), __import__("tokenizer.model")
"""
    path = tmp_path / "config_docs.py"
    path.write_text(source)
    assert _upward("tokenizer.runtime.config_docs", source, path) == [
        f"tokenizer.runtime.config_docs imports {target}"
        for target in ("benchmarks.bench", "envs.recording", "rollout", "worldmodel.world")
    ]


def test_runtime_imports_nothing_else_of_the_tokenizer():
    # tokenizer.runtime trains the tokenizer and the world models alike, so it sits under the model modules:
    # they reach it through the Task they hand to the engine, and it never reaches up to them.
    wrong = []
    for name, path in MODULES.items():
        if _in_runtime(name):
            targets = _imports(path, set(MODULES), module_level_only=False)
            targets |= _imports_by_name(path.read_text(), set(MODULES))
            wrong += [f"{name} imports {target}" for target in sorted(targets) if not _in_runtime(target)]
    assert not wrong, wrong


def _in_runtime(name: str) -> bool:
    return name == "tokenizer.runtime" or name.startswith("tokenizer.runtime.")


def test_only_envs_knows_gymnasium():
    # Training a tokenizer or a world model must not need the Gymnasium side.
    wrong = []
    for name, path in MODULES.items():
        if name.split(".")[0] != "envs":
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                modules = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                wrong += [f"{name} imports {m}" for m in modules if m.split(".")[0] == "gymnasium"]
    assert not wrong, wrong


def test_no_import_inside_functions_papers_over_a_cycle():
    # A project import inside a function is how a cycle hides; optional third-party imports are fine there.
    late = []
    for name, path in MODULES.items():
        everywhere = _imports(path, set(MODULES), module_level_only=False)
        late += [
            f"{name} imports {target} inside a function"
            for target in everywhere - _imports(path, set(MODULES), module_level_only=True)
        ]
    assert not late, late


def test_module_imports_form_no_cycle():
    graph = {name: _imports(path, set(MODULES), module_level_only=True) - {name} for name, path in MODULES.items()}
    # A package's __init__ re-exports its modules; an edge into a package means into its __init__.
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            if target.startswith(node + "."):
                continue  # a package importing its own submodules is not a cycle
            if state.get(target) == "open":  # on the current path: a cycle back to it
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(target) :] + [target]))
            if target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_only_the_harness_module_imports_stable_worldmodel_and_only_when_used():
    # stable-worldmodel lives in its own venv (.venv-swm): importing envs, or anything else, must not need it.
    wrong = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            modules += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(m.split(".")[0] == "stable_worldmodel" for m in modules):
                if name != "envs.stable_worldmodel" or node in tree.body:
                    wrong.append(f"{name} imports stable_worldmodel at line {node.lineno}")
    assert not wrong, wrong


@pytest.mark.skipif(importlib.util.find_spec("stable_worldmodel") is not None, reason="the harness is installed here")
def test_a_missing_harness_fails_in_one_line_naming_the_extra(tmp_path, capsys):
    from envs.stable_worldmodel import main

    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: main(["convert", "--dataset", str(tmp_path), "--out", str(tmp_path / "out")]))
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(error.splitlines()) == 1 and "make swm-install" in error
