"""Typed OmegaConf configs: a dataclass schema, a YAML file, dotted CLI overrides.

Every run config is a dataclass (the schema); `load_config` merges the schema's
defaults, the YAML file and `key.sub=value` overrides, in that order. A YAML file
may start from another with `_base_: other.yaml` (a path relative to it). A key
the schema does not know is an error that names it and the nearest valid key,
so a typo never silently trains with a default; a schema's `REFUSED_KEYS` class
attribute maps other names for its keys to the key each one means.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from tokenizer.runtime.errors import CheckpointError, ConfigError
from tokenizer.runtime.files import atomic_write_text

T = TypeVar("T")


def schema_keys(schema: Any, prefix: str = "") -> list[str]:
    """All dotted leaf and section keys of a dataclass schema (or instance)."""
    keys = []
    for field in dataclasses.fields(schema):
        key = f"{prefix}{field.name}"
        keys.append(key)
        value = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(value):
            keys.extend(schema_keys(value, key + "."))
    return keys


def flatten(node: Any, separator: str = ".", prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of keys joined by `separator`: {"a": {"b": 1, "c": [2]}} -> {"a.b": 1, "a.c": [2]}.

    Lists and scalars are leaves; an empty mapping leaves no key. Keys start with `prefix` (and `separator`) when
    one is given, and a `node` that is not a mapping is the one leaf `{prefix: node}`.
    """
    if not isinstance(node, Mapping):
        return {prefix: node}
    flat = {}
    for key, value in node.items():
        flat.update(flatten(value, separator, f"{prefix}{separator}{key}" if prefix else str(key)))
    return flat


def _nearest(key: str, schema: Any) -> str:
    """The key meant by unknown `key`: the one named by the REFUSED_KEYS (another name -> the key) of the schema or
    of a section holding `key`, else the closest key."""
    section, prefix, parts = schema, "", key.split(".")
    for depth, part in enumerate(parts):
        refused = getattr(section, "REFUSED_KEYS", {})
        if ".".join(parts[depth:]) in refused:
            return prefix + refused[".".join(parts[depth:])]
        value = _field_default(section, part)
        if not dataclasses.is_dataclass(value):
            break
        section, prefix = value, f"{prefix}{part}."
    keys = schema_keys(schema)
    match = difflib.get_close_matches(key, keys, n=1, cutoff=0.0)
    return match[0] if match else ""


BASE_KEY = "_base_"


def _read_yaml(path: str | Path, seen: tuple[Path, ...] = ()) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist; pass --config with a YAML file such as configs/tokenizer/tiny.yaml"
        )
    if path.resolve() in seen:
        raise ConfigError(f"config file {path} includes itself through {BASE_KEY}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml.YAMLError and friends; the message names the line
        detail = " ".join(str(err).split())
        raise ConfigError(f"config file {path} is not valid YAML: {detail}") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not a {type(cfg).__name__}")
    if BASE_KEY in cfg:
        base = _read_yaml(path.parent / str(cfg.pop(BASE_KEY)), seen + (path.resolve(),))
        cfg = OmegaConf.merge(base, cfg)
    return cfg


def _parse_overrides(overrides: Iterable[str]) -> DictConfig:
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
    try:
        return OmegaConf.from_dotlist(overrides)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot parse overrides {overrides}: {err.msg if hasattr(err, 'msg') else err}") from None


def _open_mappings(cfg: DictConfig) -> None:
    """Let fields typed as mappings (e.g. train.lr_scale) take keys the schema cannot list; sections stay closed."""
    for key in cfg:
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_missing() and not node._is_none():
            if OmegaConf.get_type(node) is dict:
                OmegaConf.set_struct(node, False)
            else:
                _open_mappings(node)


def _field_default(section: Any, name: str) -> Any:
    field = next((f for f in dataclasses.fields(section) if f.name == name), None)
    if field is None:
        return None
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def _check_sections(schema: Any, source: Any, origin: str, prefix: str = "") -> None:
    """A value where the schema has a section (`tokenizer=PATH` for `tokenizer.checkpoint=PATH`) is refused with
    the section's first key, which names what it loads or holds."""
    if not isinstance(source, (Mapping, DictConfig)):
        return
    for key in source:
        default = _field_default(schema, str(key))
        if not dataclasses.is_dataclass(default):
            continue
        value = source[key]
        if isinstance(value, (Mapping, DictConfig)):
            _check_sections(default, value, origin, f"{prefix}{key}.")
        elif value is not None:
            keys = [f.name for f in dataclasses.fields(default)]
            raise ConfigError(
                f"{origin} key '{prefix}{key}' is a section ({', '.join(keys)}), not a value; "
                f"did you mean '{prefix}{key}.{keys[0]}'?"
            )


def merge_config(schema: type[T] | T, *sources: DictConfig | dict, origin: str = "config") -> DictConfig:
    """Merge `sources` onto the schema's defaults; unknown keys, bad types and values given for sections raise
    ConfigError."""
    base = OmegaConf.structured(schema)
    OmegaConf.set_struct(base, True)
    _open_mappings(base)
    cfg = base
    for source in sources:
        _check_sections(schema, source, origin)
        try:
            cfg = OmegaConf.merge(cfg, source)
        except ConfigKeyError as err:
            key = err.full_key or str(getattr(err, "key", ""))
            # OmegaConf names the first unknown section; the one key given under it is the name to correct.
            given = flatten(OmegaConf.to_container(source) if isinstance(source, DictConfig) else source)
            under = [leaf for leaf in given if leaf == key or leaf.startswith(key + ".")]
            key = under[0] if len(under) == 1 else key
            nearest = _nearest(key, schema)
            hint = f"; did you mean {nearest!r}?" if nearest else ""
            raise ConfigError(f"unknown {origin} key {key!r}{hint}") from None
        except ValidationError as err:
            key = err.full_key or ""
            if "is not a ListConfig" in str(err.msg):
                raise ConfigError(
                    f"{origin} key {key!r} takes a list: {key}=[a,b] on the command line, {key}: [a, b] in YAML"
                ) from None
            raise ConfigError(f"{origin} key {key!r}: {' '.join(str(err.msg).split())}") from None
    return cfg


def load_config(
    schema: type[T],
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    flags: dict | None = None,
    settings: Mapping | None = None,
) -> DictConfig:
    """Schema defaults <- YAML file <- `settings` (nested typed values a program sets, e.g. the plan bench's run
    folders) <- dotted overrides <- values of command-line flags (nested), validated against the schema."""
    sources = []
    if path is not None:
        sources.append(_read_yaml(path))
    if settings:
        sources.append(dict(settings))
    sources.append(_parse_overrides(overrides))
    if flags:
        sources.append(OmegaConf.create(flags))
    return merge_config(schema, *sources)


def to_object(cfg: DictConfig) -> Any:
    """The typed dataclass instance behind a merged config."""
    return OmegaConf.to_object(cfg)


def save_config(cfg: DictConfig | Any, path: str | Path) -> None:
    """Write a resolved config as YAML, atomically."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.structured(cfg)
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def read_saved_config(schema: type[T], folder: str | Path, what: str) -> T:
    """The fields of `schema` from a saved folder's config.yaml (a model folder or a training run's);
    other sections of the file (data, train, ...) are ignored, a field of the wrong type is an error."""
    path = Path(folder) / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a saved {what}: config.yaml is missing")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:
        raise CheckpointError(f"{path} is not readable YAML ({' '.join(str(err).split())[:200]})") from None
    fields = [field.name for field in dataclasses.fields(schema)]
    return to_object(
        merge_config(schema, {key: raw[key] for key in fields if key in raw}, origin=f"{what} config {path}")
    )
