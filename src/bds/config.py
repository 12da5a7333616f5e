"""Typed run configuration: YAML in, validated, unknown keys rejected.

Every section is a dataclass. `load_config` turns YAML into them, checking types, allowed
values and ranges, and names the file, line and key of the first problem it finds.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bds.defenses.registry import ATTACK_STAGES, DefenseSettings, check_stage, default_settings
from bds.errors import ConfigError, FieldError
from bds.eval.config import EvalConfig
from bds.ranges import INT_LIMIT, out_of_range
from bds.training.config import TrainConfig

SourceKind = Literal["embedded", "hub", "local"]
SourceLabel = Literal["benign", "harmful", "safe", "unknown"]


@dataclass
class SourceConfig:
    """Where one set of records comes from.

    kind=embedded: `name` is a shipped source (see `bds data sources`).
    kind=hub: `name` is a preset with the reference protocol's preprocessing
    (beavertails-harmful, sst2, ...); `dataset`/`subset`/`split` override its defaults.
    Without `name`, `dataset` is any hub dataset id (split default: train) in a TRL format.
    kind=local: `path` to JSON/JSONL/CSV/Parquet.
    Formats (hub datasets without a preset and local files; data/formats.py): `messages`
    (conversational), `prompt` + `completion` (strings, or message lists: conversational),
    instruction / input / response, or `text`. `fields` maps record fields (id,
    instruction, input, response, source, messages, text) to other column names.
    Conversations are rendered with the model's chat template (an error if it has none).
    """

    kind: SourceKind
    name: str | None = None
    path: str | None = None
    dataset: str | None = None
    subset: str | None = None
    split: str | None = None
    format: Literal["auto", "json", "jsonl", "csv", "parquet"] = "auto"
    fields: dict[str, str] = field(default_factory=dict)
    label: SourceLabel | None = None
    limit: int | None = None

    def validate(self) -> None:
        from bds.data.sources import RECORD_FIELDS, known_source_names

        if self.kind == "local":
            if not self.path:
                raise FieldError(
                    "path", "a local source needs `path` (a JSON, JSONL, CSV or Parquet file)"
                )
        elif not (self.kind == "hub" and self.name is None and self.dataset):
            names = known_source_names(self.kind)
            if self.name not in names:
                raise FieldError(
                    "name",
                    f"unknown {self.kind} source {self.name!r}; choose one of {', '.join(names)}"
                    + (", or give `dataset` (any hub dataset id)" if self.kind == "hub" else ""),
                )
        if self.fields and self.kind != "local" and self.name is not None:
            raise FieldError(
                "fields",
                f"the {self.kind} source {self.name!r} has its own columns; remove `fields`"
                + (
                    ", or drop `name` to read `dataset` in a TRL format"
                    if self.kind == "hub"
                    else ""
                ),
            )
        for key in self.fields:
            if key not in RECORD_FIELDS:
                raise FieldError(
                    "fields",
                    f"unknown record field {key!r}; fields maps {RECORD_FIELDS} to columns",
                )
        if self.limit is not None and self.limit < 1:
            raise FieldError(
                "limit", f"must be >= 1 (or omitted for all records), got {self.limit}"
            )


@dataclass
class ModelConfig:
    """Base model: `embedded:smollm2-135m-instruct`, a Hugging Face hub id, or a local folder.

    load_in_4bit: QLoRA, the base loaded in 4 bits (NF4) with bitsandbytes on CUDA
    (bds/quantization.py); refused where bitsandbytes or a GPU is missing."""

    name: str = "embedded:smollm2-135m-instruct"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    revision: str | None = None
    trust_remote_code: bool = False
    load_in_4bit: bool = False

    def validate(self) -> None:
        if self.load_in_4bit:
            from bds.quantization import check_installed

            check_installed()


@dataclass
class DataConfig:
    """The user's fine-tuning set D_ft (benign + harmful at ratio p) and the alignment set D_safe."""

    benign: SourceConfig | None = None
    harmful: SourceConfig | None = None
    alignment: SourceConfig | None = None
    n: int = 500
    harmful_ratio: float = 0.2
    mix: Literal["exact", "interleave"] = "exact"
    n_alignment: int | None = None
    template: Literal["alpaca", "chat"] = "alpaca"
    max_length: int = 256
    truncation: Literal["truncate", "drop"] = "truncate"
    seed: int = 42

    def validate(self) -> None:
        if self.benign is None and self.harmful is None:
            raise FieldError("benign", "give at least one of `benign` and `harmful` sources")
        if self.n < 1:
            raise FieldError("n", f"must be >= 1, got {self.n}")
        if not 0.0 <= self.harmful_ratio <= 1.0:
            raise FieldError("harmful_ratio", f"must be in [0, 1], got {self.harmful_ratio}")
        if self.harmful_ratio > 0 and self.harmful is None:
            raise FieldError("harmful_ratio", "is > 0 but no `harmful` source is given")
        if self.harmful_ratio < 1 and self.benign is None:
            raise FieldError("harmful_ratio", "is < 1 but no `benign` source is given")
        if self.n_alignment is not None and self.n_alignment < 1:
            raise FieldError(
                "n_alignment", f"must be >= 1 (or omitted for all), got {self.n_alignment}"
            )
        if self.max_length < 16:
            raise FieldError("max_length", f"must be >= 16 tokens, got {self.max_length}")


@dataclass
class AlignConfig:
    """How `bds demo` aligns the base model before the attack: SFT on `data.alignment`
    (D_safe), plus an optional retain set of benign requests so the model learns when to
    refuse rather than to refuse everything.

    retain_answers: base-model (the base model's own greedy answers, generated once in
    `retain_template` with `retain_max_new_tokens`; self-distillation) or given (the
    source's responses). lr / epochs: the alignment SFT's own (default: train's), so the
    attack's settings can change without re-aligning. retain_in_alignment_set: the attack's
    alignment set (what BDS and Mix train on beside the user data) is D_safe plus the retain
    samples, all the data the model was aligned on; off (default): D_safe alone, as in the
    paper. defense: how the base model is aligned (sft, or an alignment-stage defense; the
    cached model's key names it when it is not plain SFT).
    """

    defense: DefenseSettings = field(default_factory=lambda: default_settings("sft"))
    retain: SourceConfig | None = None
    retain_answers: Literal["base-model", "given"] = "base-model"
    retain_template: Literal["alpaca", "chat"] = "chat"
    retain_max_new_tokens: int = 80
    lr: float | None = None
    epochs: int | None = None
    retain_in_alignment_set: bool = False

    def validate(self) -> None:
        try:
            check_stage(self.defense, "align.defense", ("alignment",))
        except FieldError as exc:
            raise FieldError(f"defense.{exc.key}", str(exc)) from None
        if self.lr is not None and self.lr <= 0:
            raise FieldError("lr", f"must be > 0, got {self.lr}")
        if self.epochs is not None and self.epochs < 1:
            raise FieldError("epochs", f"must be >= 1, got {self.epochs}")
        if self.retain_max_new_tokens < 1:
            raise FieldError(
                "retain_max_new_tokens", f"must be >= 1, got {self.retain_max_new_tokens}"
            )


@dataclass
class RunConfig:
    """A whole run. `defense` picks the defense by name, with its own settings (see
    bds/defenses/registry.py for the names); `train` holds what every defense reads."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    defense: DefenseSettings = field(default_factory=lambda: default_settings("bds"))
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    output_dir: str | None = None

    def validate(self) -> None:
        try:
            check_stage(self.defense, "defense", ATTACK_STAGES)
        except FieldError as exc:
            raise FieldError(f"defense.{exc.key}", str(exc)) from None
        check_run = getattr(self.defense, "check_run", None)
        if check_run is not None:  # settings the defense reads from other sections
            check_run(self)


def flat_config(cfg: Any) -> dict[str, str | int | float | bool]:
    """A config as dotted key -> scalar, the form experiment trackers take (TensorBoard's
    hparams accept no lists or nulls): lists and mappings as JSON text, None as "null"."""
    import json

    from bds.io import to_jsonable

    out: dict[str, str | int | float | bool] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, str | int | float | bool):
            out[key] = value
        else:
            out[key] = json.dumps(value)

    walk(to_jsonable(cfg), "")
    return out


# ---------------------------------------------------------------- loading ---------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, reading `1e-4` as a number as YAML 1.2 does (1.1 wants `1.0e-4`
    and would hand the float field a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_config(path: str | Path, cls: type = RunConfig, overrides: Sequence[str] = ()) -> Any:
    """Read a YAML file into `cls`, raising ConfigError with file:line on any problem.

    overrides: `KEY=VALUE` strings (bds/overrides.py) applied to the file's data before it
    is validated; a problem with one names the override."""
    data, lines = read_yaml(path)
    return from_dict(cls, data, source=str(path), lines=lines, overrides=overrides)


def read_yaml(path: str | Path) -> tuple[Any, dict[tuple[str, ...], int]]:
    """A YAML file's data ({} when empty) and the line of each key path in it; ConfigError
    with file:line for a missing file, bad syntax or a key given twice."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such config file; pass a YAML config such as configs/demo.yaml"
        )
    from bds.textio import read_text

    text = read_text(path)
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
        tree = yaml.compose(text, Loader=_Loader)
        lines = _key_lines(tree)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(
            f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax"
        ) from None
    duplicate = _duplicate_key(tree)
    if duplicate is not None:
        key, line = duplicate
        raise ConfigError(f"{path}:{line}: {key}: given twice (YAML keeps the last); keep one")
    return ({} if data is None else data), lines


def from_dict(
    cls: type,
    data: Any,
    source: str = "<config>",
    lines: dict | None = None,
    overrides: Sequence[str] = (),
) -> Any:
    """Build dataclass `cls` from plain data (plus `KEY=VALUE` overrides), validating as
    `load_config` does. `lines`: key path -> its line in `source`, or a "file:line" string
    for a key read from another file (a bench grid's `extends`)."""
    from bds.overrides import apply_overrides

    applied = {}
    if overrides:
        if not isinstance(data, dict):
            _Builder(source, lines or {}).fail(
                (), f"must be a mapping of keys to values, got {type(data).__name__}"
            )
        data = copy.deepcopy(data)  # the caller's data stays as it was
        applied = apply_overrides(cls, data, overrides, loader=_Loader)
    return _Builder(source, lines or {}, applied).build(cls, data, ())


class _Builder:
    def __init__(
        self,
        source: str,
        lines: dict[tuple[str, ...], int | str],
        overridden: dict[tuple[str, ...], str] | None = None,
    ):
        self.source = source
        self.lines = lines
        self.overridden = overridden or {}

    def fail(self, keypath: tuple[str, ...], message: str) -> typing.NoReturn:
        from bds.overrides import override_for, overrides_beside

        # Point at the override that set the key, else the deepest key we know a line for.
        override = override_for(self.overridden, keypath)
        line = None
        for i in range(len(keypath), -1, -1):
            line = self.lines.get(keypath[:i])
            if line is not None:
                break
        where = line if isinstance(line, str) else f"{self.source}:{line}" if line else self.source
        if override is not None:
            where = f"override {override}"
        elif beside := overrides_beside(self.overridden, keypath):
            message += f" (after override {', '.join(beside)})"
        key = ".".join(keypath) if keypath else "top level"
        raise ConfigError(f"{where}: {key}: {message}")

    def build(self, cls: type, data: Any, keypath: tuple[str, ...]) -> Any:
        if not isinstance(data, dict):
            self.fail(keypath, f"must be a mapping of keys to values, got {type(data).__name__}")
        resolve = getattr(cls, "resolve_settings_class", None)
        if resolve is not None:  # a registry section: its `name` picks the dataclass
            try:
                cls = resolve(data)
            except FieldError as exc:
                self.fail(keypath + (exc.key,), str(exc))
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        moved = getattr(cls, "moved_keys", {})
        for key in data:
            if key in moved:
                self.fail(keypath + (str(key),), moved[key])
            if key not in fields:
                known = ", ".join(fields)
                self.fail(keypath + (str(key),), f"unknown key; known keys here: {known}")
        kwargs = {}
        for name, f in fields.items():
            if name in data:
                kwargs[name] = self.coerce(hints[name], data[name], keypath + (name,))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail(keypath + (name,), "is required")
        obj = cls(**kwargs)
        for name, value in kwargs.items():
            problem = out_of_range(cls.__name__, name, value)
            if problem:
                self.fail(keypath + (name,), problem)
        validate = getattr(obj, "validate", None)
        if validate is not None:
            try:
                validate()
            except FieldError as exc:  # its key may be a dotted path into another section
                self.fail(keypath + tuple(exc.key.split(".")), str(exc))
        return obj

    def coerce(self, tp: Any, value: Any, keypath: tuple[str, ...]) -> Any:
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType):
            if value is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            if len(inner) == 1:
                return self.coerce(inner[0], value, keypath)
        if value is None:
            self.fail(keypath, "must not be empty")
        if origin is Literal:
            if value not in args:
                self.fail(keypath, f"must be one of {', '.join(map(str, args))}; got {value!r}")
            return value
        if dataclasses.is_dataclass(tp):
            return self.build(tp, value, keypath)
        if origin is dict:
            if not isinstance(value, dict):
                self.fail(keypath, f"must be a mapping, got {type(value).__name__}")
            return {str(k): self.coerce(args[1], v, keypath + (str(k),)) for k, v in value.items()}
        if origin is list:
            if not isinstance(value, list):
                self.fail(keypath, f"must be a list, got {type(value).__name__}")
            return [self.coerce(args[0], v, keypath) for v in value]
        if tp is bool:
            if not isinstance(value, bool):
                self.fail(keypath, f"must be true or false, got {value!r}")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                self.fail(keypath, f"must be an integer, got {value!r}")
            if abs(value) > INT_LIMIT:
                self.fail(keypath, f"is too large ({value}); give a number below 2**63")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                self.fail(keypath, f"must be a number, got {value!r}")
            try:
                number = float(value)
            except OverflowError:  # an integer beyond the float range
                number = math.inf
            if not math.isfinite(number):  # NaN passes every `<=` check that follows
                self.fail(keypath, f"must be a finite number, got {value!r}")
            return number
        if tp is str:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                self.fail(keypath, f"must be a string, got {value!r}")
            if isinstance(value, str) and not _encodable(value):
                self.fail(
                    keypath, "holds a lone surrogate (an escape like \\ud800), not text; fix it"
                )
            return str(value)
        return value


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _duplicate_key(node: Any, prefix: tuple[str, ...] = ()) -> tuple[str, int] | None:
    """(dotted key, line) of the first key given twice in one mapping, if any."""
    if isinstance(node, yaml.MappingNode):
        seen = set()
        for key_node, value_node in node.value:
            path = prefix + (str(key_node.value),)
            if path in seen:
                return ".".join(path), key_node.start_mark.line + 1
            seen.add(path)
            found = _duplicate_key(value_node, path)
            if found is not None:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item, prefix)
            if found is not None:
                return found
    return None


def _key_lines(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Map each key path in a composed YAML document to its 1-based line."""
    out: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (str(key_node.value),)
            out[path] = key_node.start_mark.line + 1
            out.update(_key_lines(value_node, path))
    return out
