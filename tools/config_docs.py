"""docs/configuration.md, generated from the config dataclasses every command parses.

    python -m tools.config_docs > docs/configuration.md
    python -m tools.config_docs --write      # the same, into the file
    python -m tools.config_docs --check      # exit 1 when the file differs from what would be written
    python -m tools.config_docs --missing    # the fields whose description is empty

A key's description is the comment on its field's line, after the comment lines directly above it
(a blank line ends that block); a section's is the comment of the field that holds it followed by
its dataclass's docstring. They are read from the source with `ast` and `tokenize`, so a schema's
own comments are the one place a key is described: editing them and rerunning `--write` keeps the
reference in step, and tests/test_config_docs.py fails while it is not.

It lives in `tools/`, above every command it documents (the scripts at the repository root and `benchmarks/`
among them): it imports each command's schema by name, which from a package those commands import would point a
dependency the wrong way (tests/test_layers.py checks it). Importing this module imports nothing heavy; the
schemas (and whatever their modules need) are imported when the document is built.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import io
import json
import re
import sys
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "docs" / "configuration.md"
REGENERATE = "python -m tools.config_docs --write"
# Comments that talk to tools, not to readers.
TOOL_COMMENTS = ("noqa", "type:", "pragma", "fmt:", "isort:")


@dataclass(frozen=True)
class Command:
    """One command that reads a run config through tokenizer.runtime.cli.parse_run_config."""

    title: str  # the section heading: the script, or the module run with -m
    source: str  # the command's file, whose docstring's first line introduces it
    usage: str  # how it is invoked
    schema: str  # "module:Class" of the dataclass it parses
    configs: str = ""  # glob, under the repository, of its example YAML files
    flags: str = ""  # "module:NAME" of its dict of tokenizer.runtime.cli.Flag, if it has module-level flags
    note: str = ""  # said under the usage line


COMMANDS = (
    Command(
        "train_tokenizer.py",
        "train_tokenizer.py",
        "python train_tokenizer.py --config FILE [key.sub=value ...]",
        "tokenizer.run_config:TokenizerRunConfig",
        "configs/tokenizer/*.yaml",
    ),
    Command(
        "train_world_model.py",
        "train_world_model.py",
        "python train_world_model.py --config FILE [key.sub=value ...]",
        "worldmodel.run_config:WorldModelRunConfig",
        "configs/world_model/*.yaml",
        note="The `cache` section is read by `python -m worldmodel.token_cache` only.",
    ),
    Command(
        "worldmodel.token_cache",
        "worldmodel/token_cache.py",
        "python -m worldmodel.token_cache --config FILE [key.sub=value ...]",
        "worldmodel.run_config:WorldModelRunConfig",
        "configs/world_model/*.yaml",
        note="It reads the world-model run config, so a training config can first fill its token cache; "
        "the keys it uses are `seed`, `tokenizer.*`, `data.*`, `cache.*` and `model.readout.*` (a readout's training "
        "targets are cached with the tokens).",
    ),
    Command(
        "train_heads.py",
        "train_heads.py",
        "python train_heads.py --config FILE [key.sub=value ...]",
        "train_heads:HeadsRunConfig",
        "configs/heads/*.yaml",
    ),
    Command(
        "rollout.py",
        "rollout.py",
        "python rollout.py [--config FILE] [key.sub=value ...] [--flag VALUE ...]",
        "rollout:RolloutRunConfig",
        "configs/rollout/*.yaml",
        flags="rollout:FLAGS",
        note="Without `--config` it starts from the defaults below.",
    ),
    Command(
        "envs.recording",
        "envs/recording.py",
        "python -m envs.recording [--config FILE] [key.sub=value ...] [--flag VALUE ...]",
        "envs.recording:RecordConfig",
        flags="envs.recording:FLAGS",
        note="Without `--config` it starts from the defaults below.",
    ),
    Command(
        "envs.stable_worldmodel",
        "envs/stable_worldmodel.py",
        "python -m envs.stable_worldmodel convert --dataset PATH [--config FILE] [key.sub=value ...] "
        "[--flag VALUE ...]",
        "envs.stable_worldmodel:ConvertConfig",
        flags="envs.stable_worldmodel:FLAGS",
        note="It runs where stable-worldmodel imports (.venv-swm, `make swm-install`). Without `--config` it starts "
        "from the defaults below.",
    ),
    Command(
        "benchmarks.plan_bench",
        "benchmarks/plan_bench.py",
        "python -m benchmarks.plan_bench [--config FILE] [--out DIR] [key.sub=value ...]",
        "benchmarks.plan_config:PlanBenchConfig",
        "configs/plan_bench/*.yaml",
        note="Without `--config` it reads configs/plan_bench/shapes.yaml; `--out DIR` sets `out`.",
    ),
    Command(
        "benchmarks.swm_protocol",
        "benchmarks/swm_protocol.py",
        "python -m benchmarks.swm_protocol [--config FILE] [--out DIR] [key.sub=value ...]",
        "benchmarks.swm_protocol:SwmProtocolConfig",
        "configs/swm_protocol/*.yaml",
        note="It runs where stable-worldmodel imports (.venv-swm, `make swm-install`). Without `--config` it reads "
        "configs/swm_protocol/tworoom.yaml; `--out DIR` sets `out`.",
    ),
    Command(
        "benchmarks.bench",
        "benchmarks/bench.py",
        "python -m benchmarks.bench [--config FILE] [key.sub=value ...] [--flag VALUE ...]",
        "benchmarks.bench:BenchRunConfig",
        flags="benchmarks.bench:FLAGS",
        note="Without `--config` it starts from the defaults below.",
    ),
)

INTRO = """\
Every command reads one run config, built in this order: the schema's defaults (the tables below),
then the YAML file given with `--config` (which may start from another with `_base_: other.yaml`,
a path relative to it), then dotted overrides `key.sub=value` anywhere on the command line, then
the command's flags, each of which sets one key. A key the schema does not know is an error that
names the nearest valid one. On the command line a list is written `key=[a,b]`; a mapping takes
any keys, `key.name=value`. The resolved config is saved as `config.yaml` in the run's folder.
"""


# --- reading the dataclasses' comments -------------------------------------------------------------


@dataclass(frozen=True)
class FieldDoc:
    text: str  # the comment lines above the field, then the one on its line(s), joined
    line: int  # the field's line in its file


def _comment_text(raw: str) -> str:
    text = raw.lstrip("#").strip()
    return "" if text.startswith(TOOL_COMMENTS) else text


def _class_source(cls: type) -> tuple[ast.ClassDef, dict[int, tuple[str, bool]], int]:
    """The class's syntax tree, its comments by line (text, whether the line holds nothing else), and the
    file line of its first source line."""
    lines, first = inspect.getsourcelines(cls)
    source = textwrap.dedent("".join(lines))
    tree = ast.parse(source)
    node = tree.body[0]
    if not isinstance(node, ast.ClassDef):
        raise TypeError(f"{cls.__qualname__}: expected a class definition at {inspect.getsourcefile(cls)}:{first}")
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            alone = token.line[: token.start[1]].strip() == ""
            comments[token.start[0]] = (_comment_text(token.string), alone)
    return node, comments, first


_FIELD_DOCS: dict[type, tuple[dict[str, FieldDoc], str]] = {}


def class_docs(cls: type) -> tuple[dict[str, FieldDoc], str]:
    """{field name: its description} for the fields `cls` itself declares, and its docstring ("" if none)."""
    if cls not in _FIELD_DOCS:
        node, comments, first = _class_source(cls)
        fields = {}
        for statement in node.body:
            if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
                continue
            start, end = statement.lineno, statement.end_lineno or statement.lineno
            above = []
            line = start - 1
            while line in comments and comments[line][1]:
                above.insert(0, comments[line][0])
                line -= 1
            own = [comments[n][0] for n in range(start, end + 1) if n in comments]
            above_text, own_text = " ".join(filter(None, above)), " ".join(filter(None, own))
            text = _sentences(above_text, own_text) if above_text and own_text else above_text or own_text
            fields[statement.target.id] = FieldDoc(text, first + start - 1)
        docstring = ast.get_docstring(node) or ""
        _FIELD_DOCS[cls] = (fields, " ".join(docstring.split()))
    return _FIELD_DOCS[cls]


def field_doc(cls: type, name: str) -> tuple[type, FieldDoc]:
    """The class in `cls`'s MRO that declares field `name` last, and the field's description: its own, or, when
    it redeclares a base's field (to change the default) without a comment, the nearest base's."""
    declaring = [klass for klass in cls.__mro__ if name in inspect.get_annotations(klass)]
    if not declaring:
        raise LookupError(f"no class in {cls.__qualname__}'s MRO declares {name!r}")
    docs = [class_docs(klass)[0].get(name, FieldDoc("", 0)) for klass in declaring]
    text = next((doc.text for doc in docs if doc.text), "")
    return declaring[0], FieldDoc(text, docs[0].line)


# --- walking a schema ------------------------------------------------------------------------------


@dataclass
class Key:
    key: str  # dotted
    type: str
    default: str
    description: str
    origin: str  # "file:line Class.field", where the description comes from


@dataclass
class Section:
    key: str  # dotted; "" for the top level
    cls: type
    description: str
    origin: str
    keys: list[Key] = dataclasses.field(default_factory=list)
    children: list[Section] = dataclasses.field(default_factory=list)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _relative(path: str | None) -> str:
    if path is None:
        return "?"
    try:
        return Path(path).resolve().relative_to(REPO).as_posix()
    except ValueError:
        return Path(path).name


def _format_default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 10 else format(value, ".6g")
    if isinstance(value, (int, str, list, dict)):
        return json.dumps(value)
    return str(value)


def _default(cfg: Any, key: str) -> str:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    *parents, leaf = key.split(".")
    node = OmegaConf.select(cfg, ".".join(parents)) if parents else cfg
    if OmegaConf.is_missing(node, leaf):
        return "(required)"
    value = node[leaf]
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    return _format_default(value)


def walk(cls: type, cfg: Any, prefix: str = "", description: str = "", origin: str = "") -> Section:
    """The section `prefix` of the merged defaults `cfg`, whose schema is `cls`, with its subsections."""
    section = Section(prefix.rstrip("."), cls, description, origin)
    for field in dataclasses.fields(cls):
        owner, doc = field_doc(cls, field.name)
        where = f"{_relative(inspect.getsourcefile(owner))}:{doc.line} {owner.__qualname__}.{field.name}"
        key = prefix + field.name
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(default):
            sub = type(default)
            _, class_doc = class_docs(sub)
            text = _sentences(doc.text, class_doc)
            section.children.append(walk(sub, cfg, key + ".", text, where))
        else:
            section.keys.append(Key(key, _type_name(field.type), _default(cfg, key), doc.text, where))
    return section


def schema_of(command: Command) -> type:
    module, _, name = command.schema.partition(":")
    return getattr(_import(module), name)


def _import(module: str) -> Any:
    # The top-level scripts (train_heads.py, rollout.py) are modules of the repository root.
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    return importlib.import_module(module)


def build(command: Command) -> Section:
    from omegaconf import OmegaConf

    schema = schema_of(command)
    _, class_doc = class_docs(schema)
    return walk(
        schema,
        OmegaConf.structured(schema),
        "",
        class_doc,
        f"{_relative(inspect.getsourcefile(schema))} {schema.__qualname__}",
    )


def sections(root: Section) -> list[Section]:
    """`root` and its subsections, depth first in field order."""
    found = [root]
    for child in root.children:
        found.extend(sections(child))
    return found


# --- Markdown --------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Prose for Markdown: `<` (which would open an HTML tag) and `*` escaped outside `code spans` (a lone
    backtick opens none), pipes everywhere, since a table cell ends at a bare one even inside a code span."""
    parts = text.split("`")
    prose = range(0, len(parts), 2) if len(parts) % 2 else range(len(parts))
    for index in prose:
        parts[index] = re.sub(r"([<*])", r"\\\1", parts[index])
    return "`".join(parts).replace("|", "\\|")


def _sentences(*parts: str) -> str:
    """Comment fragments joined as sentences: each capitalised and ending in a full stop."""
    done = []
    for part in filter(None, parts):
        part = part[0].upper() + part[1:]
        done.append(part if part.endswith((".", "!", "?")) else part + ".")
    return " ".join(done)


def _code(text: str) -> str:
    # A code span holding a backtick needs a longer fence; a pipe inside a table cell is escaped even there.
    fence = "``" if "`" in text else "`"
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|")


def anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _docstring_summary(path: Path) -> str:
    """The docstring's first paragraph, on one line (it may wrap in the source)."""
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(docstring.strip().split("\n\n")[0].split())


def _flags_table(command: Command) -> list[str]:
    if not command.flags:
        return []
    module, _, name = command.flags.partition(":")
    flags = getattr(_import(module), name)
    lines = [
        "Flags, each setting one key (they win over the file and the overrides):",
        "",
        "| flag | sets | help |",
        "| --- | --- | --- |",
    ]
    for flag_name, flag in flags.items():
        value = " VALUE ..." if flag.nargs else "" if flag.type is bool else " VALUE"
        text = flag.help + (f" (one of {', '.join(flag.choices)})" if flag.choices else "")
        lines.append(f"| {_code(flag_name + value)} | {_code(flag.key)} | {_escape(text)} |")
    return lines + [""]


def _table(section: Section) -> list[str]:
    lines = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    for key in section.keys:
        lines.append(f"| {_code(key.key)} | {_code(key.type)} | {_code(key.default)} | {_escape(key.description)} |")
    return lines


Shown = dict[tuple[str, str, str, str], str]  # (key, class, description, table) -> the command that shows it


def command_markdown(command: Command, root: Section, shown: Shown) -> list[str]:
    """The command's section. A (sub)section that an earlier command shows with the same keys, defaults and
    descriptions is named with a link to that command instead of repeated, so shared sections (`data`, `train`)
    are read once; `shown` collects the sections shown so far."""
    lines = [
        f"## {command.title}",
        "",
        _escape(_docstring_summary(REPO / command.source)),
        "",
        "```",
        command.usage,
        "```",
        "",
    ]
    if command.note:
        lines += [command.note, ""]
    schema = schema_of(command)
    lines += [f"Schema: `{schema.__module__}.{schema.__qualname__}` ({_relative(inspect.getsourcefile(schema))})."]
    if root.description:
        lines += ["", _escape(root.description)]
    lines.append("")
    examples = sorted(REPO.glob(command.configs)) if command.configs else []
    if examples:
        links = ", ".join(
            f"[{path.relative_to(REPO).as_posix()}](../{path.relative_to(REPO).as_posix()})" for path in examples
        )
        lines += [f"Example configs: {links}.", ""]
    lines += _flags_table(command)
    body: list[str] = []
    shared: dict[str, list[str]] = {}  # command title -> the keys of its sections that this command repeats
    for section in sections(root):
        table = _table(section) if section.keys else []
        identity = (section.key, section.cls.__qualname__, section.description, "\n".join(table))
        if identity in shown:
            shared.setdefault(shown[identity], []).append(f"`{section.key}`" if section.key else "the top-level keys")
            continue
        shown[identity] = command.title
        if not section.key and not table:
            continue
        body += [f"### `{section.key}`" if section.key else "### Top-level keys", ""]
        if section.key:
            source = _relative(inspect.getsourcefile(section.cls))
            body += [f"{section.cls.__qualname__} ({source}). {_escape(section.description)}".rstrip(), ""]
        if table:
            body += table + [""]
    earlier = [other.title for other in COMMANDS[: COMMANDS.index(command)] if other.schema == command.schema]
    if not body and earlier:
        return lines + [f"Its keys, defaults and descriptions are those of [{earlier[0]}](#{anchor(earlier[0])}).", ""]
    if shared:
        where = "; ".join(f"{', '.join(keys)} as under [{first}](#{anchor(first)})" for first, keys in shared.items())
        lines += [f"Sections with the same keys, defaults and descriptions as another command's: {where}.", ""]
    return lines + body


def generate() -> str:
    shown: Shown = {}
    lines = [
        "# Configuration reference",
        "",
        f"<!-- Generated from the config dataclasses by `{REGENERATE}`: edit their comments, not this file. -->",
        "",
        INTRO,
        "Commands: " + ", ".join(f"[{command.title}](#{anchor(command.title)})" for command in COMMANDS) + ".",
        "",
    ]
    for command in COMMANDS:
        lines += command_markdown(command, build(command), shown)
    return "\n".join(lines).rstrip("\n") + "\n"


def missing() -> list[str]:
    """'file:line Class.field: keys' for every field and section without a description, each field once."""
    found: dict[str, list[str]] = {}
    for command in COMMANDS:
        for section in sections(build(command)):
            if section.key and not section.description:
                found.setdefault(section.origin, []).append(f"{section.key} ({command.title})")
            for key in section.keys:
                if not key.description:
                    found.setdefault(key.origin, []).append(f"{key.key} ({command.title})")
    return [f"{origin}: {', '.join(dict.fromkeys(keys))}" for origin, keys in sorted(found.items())]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write docs/configuration.md")
    mode.add_argument(
        "--check", action="store_true", help="exit 1 when docs/configuration.md is not what --write would write"
    )
    mode.add_argument("--missing", action="store_true", help="list the fields without a description; exit 1 if any")
    args = parser.parse_args(argv)
    name = _relative(str(OUTPUT))
    if args.missing:
        gaps = missing()
        print("\n".join(gaps) if gaps else "every key has a description")
        return 1 if gaps else 0
    text = generate()
    if args.write:
        OUTPUT.write_text(text)
    elif args.check:
        if not OUTPUT.is_file() or OUTPUT.read_text() != text:
            state = "out of date with the config dataclasses" if OUTPUT.is_file() else "missing"
            print(f"{name} is {state}; run: {REGENERATE}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
