"""Reading user text: bad bytes and lone surrogates end in one sentence naming file and line.

Python's own UnicodeDecodeError names a byte offset and no file; a user fixes a line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bds.errors import BDSInputError


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The file's text; BDSInputError naming the line and column of the first bad byte."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise BDSInputError(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at column {column}); "
            "save the file as UTF-8"
        ) from None


def check_text(value: Any, where: str) -> None:
    """Refuse strings that cannot be written back as UTF-8 (lone surrogates from JSON
    escapes such as "\\ud800"), found here rather than when the results are written."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise BDSInputError(
                f"{where}: holds a lone surrogate ({value[exc.start]!r} at character "
                f"{exc.start + 1}), not valid text; fix that value"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, where)
            check_text(item, where)
    elif isinstance(value, list):
        for item in value:
            check_text(item, where)
