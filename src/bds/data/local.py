"""Local files (JSON, JSONL, CSV, Parquet) in any TRL dataset format (data/formats.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bds.data.formats import records_from_rows
from bds.data.schema import LoadedSource
from bds.errors import BDSInputError
from bds.textio import read_text

if TYPE_CHECKING:
    from bds.config import SourceConfig

FORMATS = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def load_local_source(
    cfg: SourceConfig, base_dir: str | Path = ".", prompts_only: bool = False
) -> LoadedSource:
    """Records of a local file in any of the formats of data/formats.py; `prompts_only`
    (evaluation prompts) makes the response optional."""
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
    loaded = records_from_rows(
        _read_rows(path, fmt), str(path), path.stem, cfg.fields, cfg.label, prompts_only
    )
    loaded.name = path.name
    return loaded


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
