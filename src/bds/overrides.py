"""Command-line overrides of config fields: `KEY=VALUE`, the key dotted through the sections.

    bds train -c run.yaml -o runs/x train.lr=1e-4 data.harmful_ratio=0.2 train.lora.r=16

Each VALUE is read as YAML (`1e-4`, `true`, `null`, `[q_proj, v_proj]`, `{kind: local,
path: d.jsonl}`) and written into the config's data before it is built, so it is checked
exactly as the same value in the file would be; an error names the override instead of a
file line. Keys are found by walking the config's dataclass tree, so a new section or field
is overridable with no change here; a key that is not in the tree is refused with its
nearest matches.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml

from bds.errors import ConfigError

OVERRIDE_HELP = (
    "Config overrides, KEY=VALUE with KEY dotted through the config's sections, e.g. "
    "train.lr=1e-4 data.harmful_ratio=0.2 train.lora.r=16; VALUE is read as YAML (numbers, "
    "true/false, null, lists and mappings in flow style) and checked like the same value in "
    "the config file; an unknown KEY is refused with its nearest matches."
)

KeyPath = tuple[str, ...]


def apply_overrides(
    cls: type, data: dict[str, Any], overrides: Sequence[str], loader: type = yaml.SafeLoader
) -> dict[KeyPath, str]:
    """Write each override into `data` (in place); return key path -> the override's text.

    Raises ConfigError for an override that is not KEY=VALUE, a VALUE that is not YAML, or
    a KEY that `cls`'s dataclass tree does not have."""
    applied: dict[KeyPath, str] = {}
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"override {text!r}: write KEY=VALUE, e.g. train.lr=1e-4 (see --help)"
            )
        path = tuple(key.split("."))
        for section, name in check_key(cls, path, text, data):
            _set(data, section + ("name",), name)  # the section's default defense, named
        try:
            value = yaml.load(raw, Loader=loader)  # noqa: S506 (a safe loader subclass)
        except yaml.YAMLError as exc:
            raise ConfigError(
                f"override {text}: the value is not valid YAML ({getattr(exc, 'problem', exc)}); "
                "quote it"
            ) from None
        _set(data, path, value)
        applied[path] = text
    return applied


def check_key(
    cls: type, path: KeyPath, text: str, data: dict[str, Any] | None = None
) -> list[tuple[KeyPath, str]]:
    """A key path that `cls`'s dataclass tree has (free below a dict-valued field).

    A section whose class is picked by its data (`defense: {name: lisa, ...}`) is checked
    against the class its `name` in `data` (the config so far) picks, else its default's;
    returns (section path, default name) for each such section the data does not name, so
    `defense.rho=...` on a config without a defense section sets the default's settings."""
    tp: Any = cls
    node: Any = data or {}
    default: Any = None
    unnamed: list[tuple[KeyPath, str]] = []
    for depth, name in enumerate(path):
        section = _dataclass_of(tp)
        if section is None:
            if _is_dict(tp):
                return unnamed  # a mapping field (e.g. a source's `fields`) takes any key
            break
        picked = _picked_class(section, node, default)
        named = isinstance(node, dict) and "name" in node
        if picked is not section and not named and name != "name":
            unnamed.append((path[:depth], picked().name))
        section = picked
        fields = {f.name: f for f in dataclasses.fields(section)}
        hints = typing.get_type_hints(section)
        if name not in hints or name not in fields:
            break
        tp = hints[name]
        factory = fields[name].default_factory
        default = None if factory is dataclasses.MISSING else factory
        node = node.get(name) if isinstance(node, dict) else None
        if depth == len(path) - 1:
            return unnamed
    key = ".".join(path)
    known = all_keys(cls)
    # a misspelt key, else the same field name in other sections (`lr` -> train.lr, align.lr)
    near = (
        difflib.get_close_matches(key, known, n=3, cutoff=0.8)
        or [k for k in known if k.rsplit(".", 1)[-1] == path[-1]][:4]
    )
    hint = (
        f"did you mean {' or '.join(near)}?"
        if near
        else f"the top-level keys are {', '.join(k for k in known if '.' not in k)}"
    )
    raise ConfigError(f"override {text}: unknown key {key}; {hint}")


def _picked_class(section: type, node: Any, default: Any) -> type:
    """`section`, or the subclass its data's `name` (or its default value) registers."""
    resolve = getattr(section, "resolve_settings_class", None)
    if resolve is None:
        return section
    if isinstance(node, dict) and "name" in node:
        try:
            return resolve(node)
        except ValueError:  # an unknown name is reported when the config is built
            return section
    return type(default()) if default is not None else section


def all_keys(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of a dataclass tree, sections and their fields."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        out.append(key)
        inner = _dataclass_of(hints[f.name])
        if inner is not None:
            out += all_keys(inner, key + ".")
    return out


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass behind `tp` (also inside `X | None`), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _is_dict(tp: Any) -> bool:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_dict(a) for a in typing.get_args(tp))
    return typing.get_origin(tp) is dict


def _set(data: dict[str, Any], path: KeyPath, value: Any) -> None:
    """data[a][b][c] = value, making (or replacing a null) section on the way."""
    node = data
    for name in path[:-1]:
        if not isinstance(node.get(name), dict):
            node[name] = {}
        node = node[name]
    node[path[-1]] = value


def override_for(applied: dict[KeyPath, str], keypath: KeyPath) -> str | None:
    """The override that set `keypath` or a section above it, if any."""
    for i in range(len(keypath), 0, -1):
        if keypath[:i] in applied:
            return applied[keypath[:i]]
    return None


def overrides_beside(applied: dict[KeyPath, str], keypath: KeyPath) -> list[str]:
    """Overrides of other keys in `keypath`'s section (a section check may fail on a key
    the file set because an override changed its neighbour)."""
    section = keypath[:-1]
    return [text for path, text in applied.items() if path[: len(section)] == section]
