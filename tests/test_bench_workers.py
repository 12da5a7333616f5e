# ruff: noqa: F811 (the fixtures imported below are parameters of the tests)
"""Several processes on one bench folder: `--jobs N` workers share the cells out by their
locks, a cell another process holds is left to it, and a shared stage another process is
building is waited for only after the cells that do not need it."""

import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from test_bench import grid  # noqa: F401 (a fixture)
from test_demo import cli, demo_config  # noqa: F401 (a fixture)

from bds.bench.workers import eta_seconds, eta_text
from bds.lock import LOCK_FILE, FolderBusy, folder_lock, try_folder_lock

CELLS = {f"toy/p=0.2/{d}/seed={s}" for d in ("sft", "bds") for s in (0, 1)}


@pytest.fixture
def sleeper():
    """A live process on this host, to name as a lock's holder."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def hold(folder, proc):
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": proc.pid, "host": socket.gethostname(), "since": time.time()}
    (folder / LOCK_FILE).write_text(json.dumps(holder))


def test_two_workers_run_every_cell_once_and_one_report_covers_them(tmp_path, grid, capsys):
    out = tmp_path / "bench"
    assert cli(["bench", "-c", str(grid), "-o", str(out), "--jobs", "2"]) == 0
    printed = capsys.readouterr().out
    finished = re.findall(r"\[worker (\d)\] bench: \[(\d)/4\] (\S+) done in \d+ s; ETA", printed)
    assert sorted(cell for _, _, cell in finished) == sorted(CELLS)  # each cell once
    assert sorted(int(k) for _, k, _ in finished) == [1, 2, 3, 4]  # counted over both workers
    results = json.loads((out / "results.json").read_text())
    assert len(results["cells"]) == 4 and (out / "report.md").is_file()
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    for cell in CELLS:
        record = json.loads((out / "cells" / cell / "cell.json").read_text())
        assert record["threads"] == threads
        assert not (out / "cells" / cell / LOCK_FILE).exists()
    for i in (1, 2):
        assert "bench: 4 cells" in (out / "workers" / f"{i}.log").read_text()
    assert not (out / LOCK_FILE).exists()

    (out / "report.md").unlink()
    assert cli(["bench", "-c", str(grid), "-o", str(out), "--jobs", "2"]) == 0
    assert "workers, " not in capsys.readouterr().out  # nothing left: none started
    assert (out / "report.md").is_file()


def test_the_eta_shares_the_cells_left_among_the_workers_still_busy():
    # two workers, the first cell done in 500 s: 17 like it left take 17 * 500 / 2 s, not
    # the 17 * 500 s that wall time over finished cost said while the other was half-way
    assert eta_seconds(500.0, 1.0, 17.0, 17, 2) == pytest.approx(17 * 500 / 2)
    assert eta_seconds(1000.0, 2.0, 17.0, 17, 2) == pytest.approx(17 * 500 / 2)  # the same
    assert eta_seconds(500.0, 1.0, 2.0, 1, 4) == pytest.approx(1000.0)  # one cell: one worker
    assert eta_seconds(500.0, 1.0, 0.0, 0, 2) == 0.0
    assert eta_text(500.0, 1.0, 17.0, 17, 2) == "1.2 h"
    # only resumed cells done: their times cover part of their cost, so no rate yet
    assert eta_text(0.0, 0.0, 17.0, 17, 2) == "unknown until a cell has run from its start"
    assert eta_text(0.0, 0.0, 0.0, 0, 2) == "0.0 min"


def test_a_cell_another_process_holds_is_left_to_it(tmp_path, grid, capsys, sleeper, one_thread):
    cfg = yaml.safe_load(grid.read_text())
    cfg["defenses"] = ["sft"]
    grid.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "bench"
    held = out / "cells/toy/p=0.2/sft/seed=0"
    hold(held, sleeper)
    argv = ["bench", "-c", str(grid), "-o", str(out)]
    who = f"process {sleeper.pid} on {socket.gethostname()}"
    assert cli([*argv, "--dry-run"]) == 0
    assert re.search(rf"toy/p=0.2/sft/seed=0 .* running now \({who}\)", capsys.readouterr().out)
    assert cli(argv) == 0
    assert f"toy/p=0.2/sft/seed=0: {who} runs it; left to it" in capsys.readouterr().out
    assert [c["seed"] for c in json.loads((out / "results.json").read_text())["cells"]] == [1]
    assert not (held / "cell.json").exists()

    sleeper.kill()
    sleeper.wait()
    assert cli(argv) == 0  # its holder gone, the cell is run (its lock taken over)
    assert "took over" in capsys.readouterr().out
    assert len(json.loads((out / "results.json").read_text())["cells"]) == 2


def test_an_aligned_model_being_built_elsewhere_waits_until_the_other_cells_ran(
    tmp_path,
    grid,
    monkeypatch,
    one_thread,
):
    from bds.bench import runner

    cfg = yaml.safe_load(grid.read_text())
    cfg["tasks"]["other"] = {"overrides": ["eval.batch_size=4"]}  # aligned alike: one model
    cfg["defenses"], cfg["seeds"] = ["sft"], [0]
    grid.write_text(yaml.safe_dump(cfg))
    real = runner._CellRunner.aligned_model
    calls = []

    def busy_until_waited(self, label, wait=True):
        calls.append((label, wait))
        if not wait and not any(w for _, w in calls[:-1]):
            raise FolderBusy("built elsewhere", "process 1 on elsewhere")
        return real(self, label, wait)

    monkeypatch.setattr(runner._CellRunner, "aligned_model", busy_until_waited)
    assert cli(["bench", "-c", str(grid), "-o", str(tmp_path / "b")]) == 0
    # Both cells tried without waiting, then the first waited for and run (the cell asks
    # for its model again), then the second.
    first, second = calls[0][0], calls[1][0]
    assert first != second
    assert calls == [(first, False), (second, False), *[(first, True)] * 2, *[(second, True)] * 2]


def test_a_waiting_lock_is_taken_when_its_holder_ends(tmp_path, sleeper):
    folder = tmp_path / "stage"
    hold(folder, sleeper)
    with pytest.raises(FolderBusy, match=f"in use by process {sleeper.pid}"), folder_lock(folder):
        pass
    with try_folder_lock(folder) as held:
        assert held is None
    notes = []

    def end_holder():  # reaped too: a zombie still answers os.kill(pid, 0)
        time.sleep(0.5)
        sleeper.kill()
        sleeper.wait()

    ender = threading.Thread(target=end_holder)
    ender.start()
    with folder_lock(folder, note=notes.append, wait=True, poll=0.1) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    ender.join()
    assert (
        notes[0]
        == f"waiting for {folder}: process {sleeper.pid} on {socket.gethostname()} holds it"
    )
    assert not (folder / LOCK_FILE).exists()


def test_an_aligned_model_another_process_builds_is_busy_or_waited_for(
    tmp_path,
    demo_config,
    sleeper,
    monkeypatch,
):
    from bds.align import WORK_SUFFIX, align_stage, alignment_plan
    from bds.assets import cache_dir
    from bds.config import load_config
    from bds.data.pipeline import prepare_data
    from bds.io import short_digest

    cfg = load_config(demo_config)
    data = prepare_data(cfg.data)
    key = short_digest(alignment_plan(cfg, data)[2])
    work = cache_dir() / "aligned" / (key + WORK_SUFFIX)
    hold(work, sleeper)
    with pytest.raises(FolderBusy):
        align_stage(cfg, data, wait=False)
    sleeper.kill()  # the holder ends without a model: the waiter builds it
    sleeper.wait()
    target = align_stage(cfg, data, wait=True)
    assert (target / "config.json").is_file() and not work.exists()


def test_ranks_lock_on_rank_0_only_and_a_launched_bench_is_refused(
    tmp_path, grid, monkeypatch, capsys
):
    folder = tmp_path / "run"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with folder_lock(folder) as path, try_folder_lock(folder) as again:
        assert path == again == folder / LOCK_FILE and not path.exists()  # rank 0 holds it
    assert cli(["bench", "-c", str(grid), "-o", str(tmp_path / "b")]) == 2
    assert "run `bds bench --jobs N` without the launcher" in capsys.readouterr().err
    assert not (tmp_path / "b" / "cells").exists()


def test_a_failed_worker_is_one_sentence_after_the_report(tmp_path, grid, monkeypatch, capsys):
    import sys

    import bds.bench.workers as workers

    fail = "import sys; print('error: cell exploded', file=sys.stderr); sys.exit(2)"
    monkeypatch.setattr(workers, "worker_argv", lambda opts: [sys.executable, "-c", fail])
    out = tmp_path / "b"
    assert cli(["bench", "-c", str(grid), "-o", str(out), "--jobs", "2"]) == 2
    captured = capsys.readouterr()
    assert "[worker 2] stopped with exit status 2: error: cell exploded" in captured.out
    assert "bench worker 1 stopped with exit status 2 (error: cell exploded); its output: " in (
        captured.err.replace("\n", "")
    )
    assert json.loads((out / "results.json").read_text())["cells"] == []  # reported all the same


def test_a_lock_from_another_host_holds_while_renewed_and_is_taken_over_when_not(tmp_path):
    from bds import lock

    folder = tmp_path / "shared"
    folder.mkdir()
    path = folder / LOCK_FILE
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": time.time()}))
    with pytest.raises(FolderBusy, match="in use by process 1 on elsewhere"), folder_lock(folder):
        pass  # renewed a moment ago: its holder may be working
    old = time.time() - lock.STALE_SECONDS - 60
    os.utime(path, (old, old))  # not renewed for 16 minutes: that machine went away
    notes = []
    with folder_lock(folder, note=notes.append) as held:
        assert json.loads(held.read_text())["pid"] == os.getpid()
        os.utime(held, (old, old))
        lock._renewer.renew()  # what its thread does every RENEW_SECONDS
        assert time.time() - held.stat().st_mtime < 60
    assert notes == [
        f"note: took over {path} from process 1 on elsewhere, which has not renewed it for 16 min"
    ]


def test_a_cell_runs_while_another_process_evaluates_its_aligned_model(
    tmp_path, grid, capsys, sleeper, monkeypatch, one_thread
):
    """The attack needs the aligned model, not its evaluation before any attack: a worker
    finding that evaluation under way elsewhere runs its cell and leaves the record to the
    other process (here it never writes one; a later run evaluates the model)."""
    from bds import lock

    cfg = yaml.safe_load(grid.read_text())
    cfg["defenses"] = ["sft"]
    grid.write_text(yaml.safe_dump(cfg))
    real = lock.try_folder_lock

    def evaluated_elsewhere(folder, *args, **kwargs):
        if Path(folder).parent.name == "evals":
            hold(Path(folder), sleeper)
        return real(folder, *args, **kwargs)

    monkeypatch.setattr(lock, "try_folder_lock", evaluated_elsewhere)
    out = tmp_path / "bench"
    argv = ["bench", "-c", str(grid), "-o", str(out)]
    assert cli([*argv, "--only", "*/seed=0"]) == 0
    printed = capsys.readouterr().out
    assert f"process {sleeper.pid} on {socket.gethostname()} runs it" in printed
    assert "toy: its evaluation before any attack runs elsewhere" in printed
    results = json.loads((out / "results.json").read_text())
    assert len(results["cells"]) == 1 and results["aligned_model_scores"] == {}

    monkeypatch.setattr(lock, "try_folder_lock", real)  # not undo(): BDS_CACHE stays the test's
    sleeper.kill()
    sleeper.wait()
    assert cli(argv) == 0  # the next cell evaluates the aligned model (its lock taken over)
    results = json.loads((out / "results.json").read_text())
    assert len(results["cells"]) == 2 and set(results["aligned_model_scores"]) == {"toy"}
