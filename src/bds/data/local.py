"""Local files (JSON, JSONL, CSV, Parquet) with a field mapping onto the record schema."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bds.data.schema import SOURCE_LABELS, LoadedSource, Record
from bds.errors import BDSInputError
from bds.textio import check_text, read_text

if TYPE_CHECKING:
    from bds.config import SourceConfig

# Column names tried, in order, when `fields` does not map a record field.
DEFAULT_COLUMNS = {
    "id": ("id",),
    "instruction": ("instruction", "prompt", "question"),
    "input": ("input", "context"),
    "response": ("response", "output", "answer", "completion"),
    "source": ("source", "label_source"),
}
REQUIRED = ("instruction", "response")
FORMATS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def load_local_source(
    cfg: SourceConfig, base_dir: str | Path = ".", prompts_only: bool = False
) -> LoadedSource:
    """Records of a local file; `prompts_only` (evaluation prompts) makes the response optional."""
    required = ("instruction",) if prompts_only else REQUIRED
    path = Path(cfg.path)
    if not path.is_absolute():
        path = Path(base_dir) / path
    if not path.is_file():
        raise BDSInputError(
            f"{cfg.path}: no such data file; check the path (relative paths start at {base_dir})"
        )
    fmt = cfg.format if cfg.format != "auto" else FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BDSInputError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
            "use .json/.jsonl/.csv/.parquet or set `format`"
        )
    rows = list(_read_rows(path, fmt))
    if not rows:
        raise BDSInputError(f"{path}: holds no records; give a file with at least one sample")
    columns = _resolve_columns(path, cfg.fields, rows[0][1], required)
    records, ids = [], set()
    for where, row in rows:
        values = {}
        for fld, col in columns.items():
            value = row.get(col) if col else None
            if _is_blank(value):
                value = None
            if fld in required and value is None:
                raise BDSInputError(
                    f"{where}: missing field {col!r} (record field {fld!r}); add it or map "
                    f"another column with `fields: {{{fld}: COLUMN}}`"
                )
            values[fld] = "" if value is None else value
        source = str(values["source"]) if values["source"] != "" else (cfg.label or "unknown")
        if source not in SOURCE_LABELS:
            raise BDSInputError(
                f"{where}: source {source!r} is not one of {', '.join(SOURCE_LABELS)}"
            )
        rid = str(values["id"]) if values["id"] != "" else f"{path.stem}/{len(records)}"
        if rid in ids:
            raise BDSInputError(f"{where}: duplicate id {rid!r}; ids must be unique within a file")
        ids.add(rid)
        records.append(
            Record(
                id=rid,
                instruction=str(values["instruction"]),
                input=str(values["input"]),
                response=str(values["response"]),
                source=source,
            )
        )
    return LoadedSource(path.name, records)


def _is_blank(value: Any) -> bool:
    """None, NaN (pandas' empty cell) or whitespace-only text."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and not value.strip()


def _resolve_columns(
    path: Path, mapping: dict[str, str], first: dict[str, Any], required: tuple[str, ...]
) -> dict[str, str | None]:
    """Record field -> column. Mapped columns must exist; required ones must be found."""
    out: dict[str, str | None] = {}
    for fld, candidates in DEFAULT_COLUMNS.items():
        if fld in mapping:
            if mapping[fld] not in first:
                raise BDSInputError(
                    f"{path}: `fields` maps {fld!r} to column {mapping[fld]!r}, which the file does "
                    f"not have (columns: {', '.join(map(str, first))}); fix the mapping"
                )
            out[fld] = mapping[fld]
            continue
        out[fld] = next((c for c in candidates if c in first), None)
        if out[fld] is None and fld in required:
            raise BDSInputError(
                f"{path}: no column for record field {fld!r} (looked for {', '.join(candidates)}); "
                f"map one with `fields: {{{fld}: COLUMN}}`"
            )
    return out


def _read_rows(path: Path, fmt: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (location for messages, row) pairs; locations are file:line for text formats."""
    if fmt == "jsonl":
        text = read_text(path).removeprefix("\ufeff")  # bad bytes name their line
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BDSInputError(
                    f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno}); fix or remove that line"
                ) from None
            if not isinstance(row, dict):
                raise BDSInputError(
                    f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}"
                )
            check_text(row, f"{path}:{lineno}")
            yield f"{path}:{lineno}", row
    elif fmt == "json":
        text = read_text(path).removeprefix("\ufeff")
        if not text.strip():
            return
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BDSInputError(
                f"{path}:{exc.lineno}: malformed JSON ({exc.msg}); fix the file"
            ) from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise BDSInputError(f'{path}: expected a JSON list of objects (or {{"data": [...]}})')
        for i, row in enumerate(data):
            if not isinstance(row, dict):
                raise BDSInputError(f"{path}: item {i} is {type(row).__name__}, expected an object")
            check_text(row, f"{path}: item {i}")
            yield f"{path}: item {i}", row
    elif fmt == "csv":
        from io import StringIO

        import pandas as pd

        try:
            df = pd.read_csv(StringIO(read_text(path)), dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            return
        except pd.errors.ParserError as exc:
            raise BDSInputError(
                f"{path}: malformed CSV ({str(exc).strip()}); fix the file"
            ) from None
        # Rows are numbered from 1 after the header (a quoted field may span several lines).
        for i, row in enumerate(df.to_dict("records")):
            yield f"{path}: row {i + 1}", row
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for bad files
            raise BDSInputError(
                f"{path}: not a readable Parquet file ({exc}); check the file"
            ) from None
        for i, row in enumerate(table.to_pylist()):
            yield f"{path}: row {i + 1}", row
