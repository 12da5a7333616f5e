"""What every benchmark records next to its numbers: the machine and package versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    from bds.machine import machine as record

    return record()


def environment() -> dict[str, Any]:
    """The machine and the package versions, for a benchmark's protocol."""
    from bds.training.outputs import package_versions

    return {"machine": machine(), "versions": package_versions()}


def previous_rows(output: Path) -> list[dict[str, Any]]:
    """The rows a resumable benchmark already wrote to `output` (none if it is new)."""
    return json.loads(output.read_text())["rows"] if output.is_file() else []


def write_rows(output: Path, benchmark: str, rows: list, protocol: dict[str, Any]) -> None:
    """Rewrite `output` with every row so far, the protocol and the environment."""
    from bds.io import to_jsonable, write_json

    output.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": benchmark, "rows": rows, "protocol": {**protocol, **environment()}}
    write_json(output, to_jsonable(result))
