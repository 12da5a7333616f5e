"""`bds bench --jobs N`: N worker processes share one bench folder on this machine.

A 135M-parameter model keeps few cores busy: on a 2-core AMD EPYC two processes at 1 thread
each answered 1.16x as many prompts per second as one at 2 threads in bf16, 1.40x in
float32 at AVX2 (benchmarks/worker_throughput.py; docs/bench.md). Each worker
is a `bds bench --worker` of its own, sharing the cells out by their locks
(bds/bench/runner.py), with cpus // N threads and, where CUDA is, one of the visible GPUs
(round robin). Its whole output goes to OUT/workers/<i>.log; its lines this console shows,
prefixed, a finished cell's with the ETA over all workers. The report is written once, when
every worker has stopped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

WORKERS_DIR = "workers"


def eta_seconds(took: float, cost_done: float, cost_left: float, cells_left: int,
                workers: int) -> float:  # fmt: skip
    """Seconds until the last cell ends: the finished cells' own seconds per unit of
    estimated cost, times the cost left, shared by the workers that still have a cell.

    Not the wall time since the start over the cost done: that counts the cells the other
    workers are part-way through as nothing, so with N workers the first ETA was N times
    too long (2.4 h, then 1.2 h a minute later, in the embedded grid).
    """
    rate = took / max(cost_done, 1e-9)
    return cost_left * rate / max(1, min(workers, cells_left))


def eta_text(took: float, cost_done: float, cost_left: float, cells_left: int,
             workers: int) -> str:  # fmt: skip
    """eta_seconds in words; unknown while no cell has run from its start (a resumed cell's
    time covers part of its cost, so it tells nothing of the rate)."""
    from bds.bench.runner import _hours

    if cells_left == 0:
        return _hours(0.0)
    if cost_done <= 0:
        return "unknown until a cell has run from its start"
    return _hours(eta_seconds(took, cost_done, cost_left, cells_left, workers))


def run_workers(opts: Any, rows: list[dict], log: Any = print) -> str | None:
    """Run the cells of `rows` (the selected pending rows of runner.plan) in opts.jobs
    worker processes; when all have stopped, None, or the sentence naming the first one
    that failed (KeyboardInterrupt when they were interrupted)."""
    from bds.bench.runner import DONE_IN, RESUMED

    n = min(opts.jobs, len(rows))
    if n == 0:
        return None
    threads = max(1, cpus() // n)
    gpus = visible_gpus()
    folder = Path(opts.output) / WORKERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    cost = {r["cell"].id: sum(r["cost"].values()) for r in rows}
    log(
        f"bench: {n} workers, {threads} thread{'s' * (threads > 1)} each"
        + (f", GPUs {', '.join(gpus)} shared round robin" if gpus else "")
        + f"; their whole output: {folder}/<worker>.log"
    )
    done_line = re.compile(rf"bench: (\S+) {DONE_IN} (\d+) s({re.escape(RESUMED)})?$")
    progress = {"cells": 0, "cost": 0.0, "timed_cost": 0.0, "took": 0.0}
    guard = threading.Lock()

    def relay(i: int, proc: subprocess.Popen, logfile: Path) -> None:
        with logfile.open("a", encoding="utf-8") as copy:
            for line in proc.stdout:
                line = line.rstrip("\n")
                copy.write(line + "\n")
                copy.flush()
                match = done_line.match(line)
                if match and match.group(1) in cost:
                    with guard:
                        progress["cells"] += 1
                        progress["cost"] += cost[match.group(1)]
                        if not match.group(3):  # a resumed cell's time is part of its cost
                            progress["took"] += float(match.group(2))
                            progress["timed_cost"] += cost[match.group(1)]
                        eta = eta_text(
                            progress["took"], progress["timed_cost"],
                            sum(cost.values()) - progress["cost"], len(cost) - progress["cells"], n,
                        )  # fmt: skip
                        done = line.removeprefix("bench: ")
                        line = f"bench: [{progress['cells']}/{len(cost)}] {done}; ETA {eta}"
                log(f"[worker {i}] {line}")
        if proc.wait() != 0:
            log(f"[worker {i}] stopped with exit status {proc.returncode}: {last_error(logfile)}")

    procs, relays = [], []
    for i in range(1, n + 1):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        env["PYTHONUNBUFFERED"] = "1"  # its lines as they come, not when a pipe buffer fills
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[(i - 1) % len(gpus)]
        logfile = folder / f"{i}.log"
        logfile.write_text("", encoding="utf-8")
        with logfile.open("a", encoding="utf-8") as errors:  # the child keeps its own handle
            proc = subprocess.Popen(
                worker_argv(opts), env=env, stdout=subprocess.PIPE, stderr=errors, text=True
            )
        procs.append((i, proc, logfile))
        relays.append(threading.Thread(target=relay, args=(i, proc, logfile), daemon=True))
        relays[-1].start()
    try:
        for _, proc, _ in procs:
            proc.wait()
    except KeyboardInterrupt:  # the workers got the same Ctrl-C: let them keep what they did
        for _, proc, _ in procs:
            proc.wait()
        raise
    for thread in relays:
        thread.join()
    failed = [(i, proc.returncode, logfile) for i, proc, logfile in procs if proc.returncode]
    if any(code == 130 for _, code, _ in failed):
        raise KeyboardInterrupt
    if not failed:
        return None
    i, code, logfile = failed[0]
    return (
        f"bench worker {i} stopped with exit status {code} ({last_error(logfile)}); its "
        f"output: {logfile}; the cells finished are kept and reported: run the same command "
        "to go on"
    )


def worker_argv(opts: Any) -> list[str]:
    argv = [sys.executable, "-m", "bds", "bench", "-c", str(opts.grid), "-o", str(opts.output)]
    for pattern in opts.only:
        argv += ["--only", pattern]
    if opts.limit is not None:
        argv += ["--limit", str(opts.limit)]
    return [*argv, "--worker"]


def cpus() -> int:
    """The CPUs this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    if not torch.cuda.is_available():
        return []
    named = os.environ.get("CUDA_VISIBLE_DEVICES")
    if named:
        return [d.strip() for d in named.split(",") if d.strip()][: torch.cuda.device_count()]
    return [str(k) for k in range(torch.cuda.device_count())]


def last_error(logfile: Path) -> str:
    """The worker's `error:` line, or else the last line it wrote (a traceback's last)."""
    lines = [ln.strip() for ln in logfile.read_text(encoding="utf-8").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["no output"])[-1]
