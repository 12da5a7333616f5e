"""One writer per output folder: a lock file naming its holder (pid and host).

Two `bds train` on one folder would interleave their logs and leave one run's summary
beside the other's adapter. The lock is created with O_EXCL (atomic on local and NFSv3+
file systems); a lock left by a process that no longer runs on this host is taken over,
with a note. A lock held on another host cannot be checked from here: it is honoured while
its holder renews it (the file is touched every RENEW_SECONDS while held), and taken over,
with a note, once it has not been renewed for STALE_SECONDS (a machine that went away, or
this machine under a new host name).

In a multi-process launch (accelerate: RANK, WORLD_SIZE) rank 0 holds a lock for all
ranks; the others hold nothing and never wait, or they would wait on their own rank 0.

Stages several processes may reach at once (an aligned model or an evaluation two bench
workers both need) wait for the holder instead (`wait=True`); a bench worker skips a cell
another worker holds (`try_folder_lock`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bds.errors import BDSInputError

LOCK_FILE = ".bds.lock"
WAIT_POLL_SECONDS = 5.0
RENEW_SECONDS = 60.0
STALE_SECONDS = 900.0  # 15 renewals missed


class FolderBusy(BDSInputError):
    """Another live process (or one on another host) holds the folder's lock."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder  # "process PID on HOST"


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
def folder_lock(
    folder: str | Path,
    note: Callable[[str], None] = print,
    wait: bool = False,
    poll: float = WAIT_POLL_SECONDS,
) -> Iterator[Path]:
    """Hold `folder`'s lock for the duration. FolderBusy when another live process has it,
    unless `wait`: then wait for it (polling every `poll` seconds; one note)."""
    if not main_rank():
        yield Path(folder) / LOCK_FILE
        return
    waited = False
    while True:
        try:
            path = _acquire(Path(folder), note)
            break
        except FolderBusy as busy:
            if not wait:
                raise
            if not waited:
                note(f"waiting for {folder}: {busy.holder} holds it")
                waited = True
            time.sleep(poll)
    try:
        yield path
    finally:
        _release(path)


@contextmanager
def try_folder_lock(
    folder: str | Path,
    note: Callable[[str], None] = print,
    busy: Callable[[str], None] = lambda holder: None,
) -> Iterator[Path | None]:
    """`folder`'s lock held for the duration, or None (nothing held) when another process
    has it, after `busy("process PID on HOST")`."""
    if not main_rank():
        yield Path(folder) / LOCK_FILE
        return
    try:
        path = _acquire(Path(folder), note)
    except FolderBusy as exc:
        busy(exc.holder)
        yield None
        return
    try:
        yield path
    finally:
        _release(path)


def main_rank() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def multi_process_launch() -> bool:
    """Started as one of several ranks (accelerate launch, torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def live_holder(folder: str | Path) -> str | None:
    """ "process PID on HOST" when a process other than this one holds `folder`'s lock and
    may still run (on another host: it renewed the lock lately), else None."""
    path = Path(folder) / LOCK_FILE
    holder = _holder(path)
    if not holder or holder.get("pid") == os.getpid():
        return None
    if holder.get("host") == socket.gethostname():
        if not _alive(int(holder.get("pid", -1))):
            return None
    elif _unrenewed(path) > STALE_SECONDS:
        return None
    return f"process {holder.get('pid')} on {holder.get('host')}"


def _acquire(folder: Path, note: Callable[[str], None]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
    for _ in range(3):  # a stale lock is removed once; a racing taker retries
        fd = _create(path)
        if fd is not None:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(me, fh)
            _renewer.add(path)
            return path
        holder = _holder(path)
        if holder is None:
            if path.exists() and time.time() - path.stat().st_mtime < 5:  # being written now
                time.sleep(0.2)
                continue
            note(f"note: {path} was unreadable; taken over")
        elif holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
            raise BDSInputError(f"{folder}: this process already writes there")
        elif holder.get("host") != me["host"] and _unrenewed(path) > STALE_SECONDS:
            minutes = _unrenewed(path) / 60
            note(f"note: took over {path} from process {holder.get('pid')} on "
                 f"{holder.get('host')}, which has not renewed it for {minutes:.0f} min")  # fmt: skip
        elif holder.get("host") != me["host"] or _alive(int(holder.get("pid", -1))):
            since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.get("since", 0)))
            who = f"process {holder.get('pid')} on {holder.get('host')}"
            raise FolderBusy(
                f"{folder}: in use by {who} since {since}; wait for it, use another folder, "
                f"or delete {path} if that process is gone",
                who,
            )
        else:
            note(f"note: took over {path} from process {holder['pid']}, which no longer runs")
        path.unlink(missing_ok=True)
    raise BDSInputError(f"{folder}: could not take its lock {path}; try again")


def _release(path: Path) -> None:
    _renewer.discard(path)
    if (_holder(path) or {}).get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def _unrenewed(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


class _Renewer:
    """Touches the lock files this process holds every RENEW_SECONDS (one daemon thread)."""

    def __init__(self) -> None:
        self.held: set[Path] = set()
        self.guard = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, path: Path) -> None:
        with self.guard:
            self.held.add(path)
            if self.thread is None or not self.thread.is_alive():  # none yet, or forked
                self.thread = threading.Thread(target=self._run, name="bds-lock", daemon=True)
                self.thread.start()

    def discard(self, path: Path) -> None:
        with self.guard:
            self.held.discard(path)

    def _run(self) -> None:
        while True:
            time.sleep(RENEW_SECONDS)
            self.renew()

    def renew(self) -> None:
        with self.guard:
            paths = list(self.held)
        for path in paths:
            if (_holder(path) or {}).get("pid") == os.getpid():
                with contextlib.suppress(OSError):  # removed meanwhile
                    os.utime(path)


_renewer = _Renewer()
