"""One writer per output folder: a lock file naming its holder (pid and host).

Two `bds train` on one folder would interleave their logs and leave one run's summary
beside the other's adapter. The lock is created with O_EXCL (atomic on local and NFSv3+
file systems); a lock left by a process that no longer runs on this host is taken over,
with a note. A lock held on another host cannot be checked from here and is refused.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bds.errors import BDSInputError

LOCK_FILE = ".bds.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # half-written by a writer that died at once, or removed meanwhile


def _create(path: Path) -> int | None:
    try:
        return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None


@contextmanager
def folder_lock(folder: str | Path, note: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold `folder`'s lock for the duration; BDSInputError when another live process has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(3):  # a stale lock is removed once; a racing taker retries
        fd = _create(path)
        if fd is not None:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            break
        holder = _holder(path)
        if holder is None:
            if path.exists() and time.time() - path.stat().st_mtime < 5:  # being written now
                time.sleep(0.2)
                continue
            note(f"note: {path} was unreadable; taken over")
        elif holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
            raise BDSInputError(f"{folder}: this process already writes there")
        elif holder.get("host") != me["host"] or _alive(int(holder.get("pid", -1))):
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.get("since", 0)))
            raise BDSInputError(
                f"{folder}: in use by process {holder.get('pid')} on {holder.get('host')} "
                f"since {since}; wait for it, use another folder, or delete {path} if that "
                "process is gone"
            )
        else:
            note(f"note: took over {path} from process {holder['pid']}, which no longer runs")
        path.unlink(missing_ok=True)
    else:
        raise BDSInputError(f"{folder}: could not take its lock {path}; try again")
    try:
        yield path
    finally:
        if (_holder(path) or {}).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)
