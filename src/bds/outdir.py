"""Output folders checked before any slow work: a path that is a file, lies under a file,
cannot be written or has no room is refused at once, not after an hour of training."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from bds.errors import BDSInputError

MB = 1 << 20


def check_output_dir(path: str | Path, flag: str = "--output", need_bytes: int = 0) -> Path:
    """Create `path` (a folder) if needed and prove a file can be written in it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BDSInputError(f"{flag} {path}: is a file, not a folder; give a folder path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise BDSInputError(
                    f"{flag} {path}: {parent} is a file, so no folder can be made under it; "
                    "give another path"
                )
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".bds-write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise BDSInputError(
            f"{flag} {path}: cannot write there ({exc.strerror}); choose a writable folder"
        ) from None
    check_free_space(path, need_bytes, flag)
    return path


def check_free_space(path: Path, need_bytes: int, flag: str = "--output") -> None:
    """Refuse when the disk holding `path` has less room than the outputs need."""
    if need_bytes <= 0:
        return
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        raise BDSInputError(
            f"{flag} {path}: only {free / MB:.0f} MB free on its disk, the outputs need about "
            f"{need_bytes / MB:.0f} MB; free space or choose another folder"
        )
