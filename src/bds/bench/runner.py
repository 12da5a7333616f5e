"""`bds bench`: run a grid's cells, cheapest first, each in its own folder, resumable.

A cell = one attack (bds/demo.py `attack_stage`, which resumes from the trainer's
checkpoints and keeps a finished run) + its evaluation on each split of `evaluate_on`,
summarised in the cell's cell.json (its settings and per-item outcomes): a cell with a
cell.json for the same config is skipped. results.json keeps the same, so it restores a
lost bench folder's finished cells (`--restore`, bds/bench/portable.py). Shared stages are
cached: the aligned models (bds/align.py, one per task config and alignment-stage defense,
each evaluated before any attack: OUT/aligned.json), and evaluations, keyed by the model's
files and the evaluation config (OUT/evals/<key>/), so an unchanged model is never
evaluated twice.

Several processes may work on one bench folder at once (`--jobs`, bds/bench/workers.py, or
`bds bench` started on several machines that share the folder): each takes a cell's lock
before running it and skips a cell another one holds; a shared stage one of them is
building is waited for (an aligned model: after the cells that do not need it), and the
folder's shared files (eval-sets/, aligned.json, the report) are written under its lock.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bds.bench.cells import Cell, Grid, align_cost, cell_cost
from bds.bench.config import load_grid
from bds.errors import BDSInputError
from bds.io import short_digest, to_jsonable, write_json
from bds.run_identity import same_config

CELL_FILE = "cell.json"
EVALS_DIR = "evals"
ALIGNED_FILE = "aligned.json"  # task -> the aligned model and its evaluation folders
DONE_IN = "done in"  # a worker's line for a finished cell: "bench: CELL done in S s"
RESUMED = " (resumed)"  # ...ends so when the cell went on from an earlier, stopped run


@dataclass
class BenchOptions:
    grid: Path
    output: Path
    limit: int | None = None
    dry_run: bool = False
    only: tuple[str, ...] = ()  # cell-id patterns (fnmatch); empty: every cell
    jobs: int = 1  # worker processes on this machine (bds/bench/workers.py)
    worker: bool = False  # one of them: runs cells, leaves the report to the parent
    restore: Path | None = None  # an earlier results.json whose finished cells to restore


def task_metric(cfg: Any) -> str:
    from bds.eval.metrics import infer_metric

    fa = cfg.eval.finetune_accuracy
    return infer_metric(fa.data) if fa.metric == "auto" else fa.metric


def config_digest(cfg: Any) -> str:
    return short_digest(to_jsonable(cfg))


def finished_record(cell: Cell, cfg: Any, out: Path) -> dict[str, Any] | None:
    """The cell's record if it was run with exactly these settings, else None."""
    path = cell.folder(out) / CELL_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record["config_digest"] == config_digest(cfg):
        return record
    # a setting added to bds since the cell ran, left off, is the same cell
    return record if same_config(record.get("config"), to_jsonable(cfg)) else None


def is_done(cell: Cell, cfg: Any, out: Path, splits: Any = ()) -> bool:
    """Run with these settings and evaluated on every split of `splits` (a split added to
    the grid later makes a finished cell pending; its attack is kept, only the new split's
    evaluation runs)."""
    record = finished_record(cell, cfg, out)
    return record is not None and set(splits) <= set(record["evals"])


# ---------------------------------------------------------------- plan --------------------


def plan(grid: Grid, out: Path) -> dict[str, Any]:
    """Every cell with its estimated cost, cheapest first; the shared stages' cost."""
    from bds.bench.evalsets import count_items

    rates = grid.cfg.cost
    items: dict[str, dict[str, int]] = {}
    for task in grid.cfg.tasks:
        items[task] = {}
        for split in grid.cfg.evaluate_on:
            for metric, eset in grid.eval_sets(task, split).items():
                where = f"{grid.path}: {split} split, {metric}"
                items[task][metric] = items[task].get(metric, 0) + count_items(eset, metric, where)
    rows = []
    for cell in grid.cells:
        cfg = grid.config(cell)
        cost = cell_cost(cfg, items[cell.task], rates)
        done = is_done(cell, cfg, out, grid.cfg.evaluate_on)
        rows.append({"cell": cell, "cost": cost, "done": done})
    rows.sort(key=lambda r: (round(sum(r["cost"].values()), 1), r["cell"].seed, r["cell"].id))
    shared = _shared_stages(grid, out, items, rates)
    return {"rows": rows, "shared": shared, "items": items, "out": out}


def _shared_stages(grid: Grid, out: Path, items: dict, rates: Any) -> dict[str, dict]:
    """Per aligned model (Grid.align_label): the estimated seconds of building it (None when
    the grid aligns nothing) and of evaluating it, the key its build is shared by (tasks
    aligned alike share one model; `first`: the label that lists it), and whether this
    bench folder has both already (OUT/aligned.json)."""
    shared: dict[str, dict] = {}
    costs: dict[str, float] = {}
    path = out / ALIGNED_FILE
    known = json.loads(path.read_text()) if path.is_file() else {}
    for label in grid.align_labels():
        cfg = grid.aligned_config(label)
        key = short_digest(
            [cfg.model, cfg.align, cfg.train, cfg.data.alignment, cfg.data.n_alignment]
        )
        first = key not in costs
        if grid.cfg.align and first:
            costs[key] = align_cost(cfg, *_alignment_sizes(cfg), rates)
        shared[label] = {
            "align": costs.get(key),
            "align_key": key,
            "first": first,
            "eval": cell_cost(cfg, items[grid.label_task(label)], rates)["eval"],
            **_aligned_state(known.get(label), grid.cfg.evaluate_on),
        }
    return shared


def _aligned_state(known: dict[str, Any] | None, splits: Any) -> dict[str, bool]:
    """Whether an earlier run of this bench folder built an aligned model (`known`: its
    entry in OUT/aligned.json) (`built`) and evaluated it on every split (`done`: its shared
    stages cost nothing now)."""
    from bds.eval.runner import RESULTS_FILE

    if not known:
        return {"built": False, "done": False}
    evals = known.get("evals", {})
    built = not known.get("alignment_defense") or Path(known["model"]).is_dir()
    evaluated = all(
        split in evals and (Path(evals[split]) / RESULTS_FILE).is_file() for split in splits
    )
    return {"built": built, "done": built and evaluated}


def _shared_seconds(shared: dict[str, dict], labels: Any) -> float:
    """The shared stages' seconds still to spend for the aligned models `labels`: each one's
    evaluation, and each build among them once, unless any label sharing it has it built."""
    built = {s["align_key"] for s in shared.values() if s["built"]}
    todo = [shared[label] for label in dict.fromkeys(labels) if not shared[label]["done"]]
    builds = {s["align_key"]: s["align"] or 0.0 for s in todo if s["align_key"] not in built}
    return sum(s["eval"] for s in todo) + sum(builds.values())


def _alignment_sizes(cfg: Any) -> tuple[int, int]:
    """(alignment samples, retain requests) counted offline where they can be."""
    from bds.data.sources import load_source

    n_align = cfg.data.n_alignment or 0
    source = cfg.data.alignment
    if not n_align and source is not None and source.kind != "hub":
        n_align = len(load_source(source).records)
    n_retain = 0
    if cfg.align.retain is not None and cfg.align.retain.kind != "hub":
        n_retain = len(load_source(cfg.align.retain, prompts_only=True).records)
    return n_align, n_retain


def selected(rows: list[dict], only: tuple[str, ...], limit: int | None, where: str) -> list:
    """The pending rows to run now: those whose cell id matches a pattern of `only` (all when
    empty), cheapest first, the first `limit` of them. A pattern that matches no cell of the
    grid is an input error: a typo would otherwise run nothing, or everything."""
    from fnmatch import fnmatchcase

    for pattern in only:
        if not any(fnmatchcase(r["cell"].id, pattern) for r in rows):
            example = rows[0]["cell"].id if rows else "none"
            raise BDSInputError(
                f"--only {pattern!r} matches none of the {len(rows)} cells of {where}; a cell "
                f"id reads like {example!r} (task/p=P/defense/seed=S; * and ? match any text)"
            )
    pending = [r for r in rows if not r["done"]]
    if only:
        pending = [r for r in pending if any(fnmatchcase(r["cell"].id, p) for p in only)]
    return pending[:limit] if limit is not None else pending


def format_plan(
    grid: Grid, planned: dict[str, Any], limit: int | None, only: tuple[str, ...] = ()
) -> list[str]:
    from bds.lock import live_holder

    rows = planned["rows"]
    pending = [r for r in rows if not r["done"]]
    chosen = selected(rows, only, limit, str(grid.path))
    lines = [f"{'cell':62} {'train s':>9} {'eval s':>9}  state"]
    for r in rows:
        state = "done" if r["done"] else ("run" if r in chosen else "later (--limit/--only)")
        running = None if r["done"] else live_holder(r["cell"].folder(planned["out"]))
        state = f"running now ({running})" if running else state
        c = r["cost"]
        lines.append(f"{r['cell'].id:62} {c['train']:9.0f} {c['eval']:9.0f}  {state}")
    cells_s = sum(sum(r["cost"].values()) for r in chosen)
    needed = [grid.align_label(r["cell"]) for r in chosen]
    shared_s = _shared_seconds(planned["shared"], needed)
    for label, s in planned["shared"].items():
        if s["done"]:
            state = "done"
        elif label not in needed:
            state = "later (no cell to run now needs it)"
        elif s["align"] is not None and not s["first"]:
            state = "run (the aligned model: built for the task listed above)"
        else:
            state = "run (once; less if the aligned model is cached)"
        if s["align"] is not None and s["first"]:
            lines.append(f"{'shared: align (' + label + ')':62} {s['align']:9.0f}  {state}")
        lines.append(
            f"{'shared: eval of the aligned model (' + label + ')':62} {s['eval']:9.0f}  {state}"
        )
    rates = grid.cfg.cost
    origin = rates.measured or "assumed (cost: in the grid), not measured"
    lines.append(
        f"{len(rows)} cells, {len(rows) - len(pending)} done, {len(chosen)} to run now: "
        f"estimated {_hours(cells_s)} + {_hours(shared_s)} shared stages (at most; rates: "
        f"{rates.train_step_seconds:g} s/train step, {rates.decode_step_seconds:g} s/decode "
        f"step, {rates.judge_item_seconds:g} s/judged answer, {origin})"
    )
    return lines


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


# ---------------------------------------------------------------- run ---------------------


def run_bench(opts: BenchOptions, log: Any = print) -> dict[str, Any] | None:
    """Run the grid's pending cells (those matching `only`, the first `limit` of them), then
    write the report over every finished cell (a worker leaves it to its parent: None)."""
    from bds.lock import multi_process_launch
    from bds.outdir import check_output_dir

    grid = Grid(load_grid(opts.grid), opts.grid)
    if opts.restore is not None:  # before the plan, which then counts them finished
        _restore(grid, opts, log)
    if opts.dry_run:
        for line in format_plan(grid, plan(grid, opts.output), opts.limit, opts.only):
            log(line)
        return None
    check_output_dir(opts.output)
    if multi_process_launch():  # every rank would evaluate every cell into the same files
        raise BDSInputError(
            "bds bench runs here as one rank of a multi-process launch (accelerate launch, "
            "torchrun), whose ranks would each evaluate every cell into the same folder; run "
            "`bds bench --jobs N` without the launcher (one cell per GPU, N GPUs at once)"
        )
    if opts.jobs > 1:
        from bds.bench.workers import run_workers

        rows = selected(plan(grid, opts.output)["rows"], opts.only, opts.limit, str(grid.path))
        failure = run_workers(opts, rows, log)
        results = write_report(grid, opts.output, log)  # the cells finished, whatever failed
        if failure:
            raise BDSInputError(failure)
        return results
    _run(grid, opts, log)
    return None if opts.worker else write_report(grid, opts.output, log)


def _restore(grid: Grid, opts: BenchOptions, log: Any) -> None:
    """The finished cells of an earlier results.json written into the bench folder
    (bds/bench/portable.py)."""
    from bds.bench.portable import format_counts, restore
    from bds.lock import folder_lock
    from bds.outdir import check_output_dir

    check_output_dir(opts.output)
    with folder_lock(opts.output, note=log, wait=True):
        counts = restore(grid, opts.output, opts.restore, _eval_sets(grid, opts.output)[1])
    log(format_counts(counts, opts.restore))


def write_report(grid: Grid, out: Path, log: Any = print) -> dict[str, Any]:
    """results.json, report.md/html and plots over every finished cell."""
    from bds.bench.results import collect, write_outputs
    from bds.lock import folder_lock

    with folder_lock(out, note=log, wait=True):
        results = to_jsonable(collect(grid, out, _eval_sets(grid, out)[1]))
        write_outputs(results, out)
    return results


def _eval_sets(grid: Grid, out: Path) -> tuple[dict[str, str], dict]:
    """(task -> FA metric, the evaluation sets written once to OUT/eval-sets); the caller
    holds the folder's lock."""
    from bds.bench.evalsets import materialize

    metrics = {task: _metric_or_none(grid.task_config(task)) for task in grid.cfg.tasks}
    return metrics, materialize(grid, out, metrics)


def _run(grid: Grid, opts: BenchOptions, log: Any) -> None:
    from bds.bench.workers import eta_text
    from bds.lock import FolderBusy, folder_lock, try_folder_lock

    out = opts.output
    with folder_lock(out, note=log, wait=True):  # written once, by one process
        metrics, sets = _eval_sets(grid, out)
    planned = plan(grid, out)
    pending = [r for r in planned["rows"] if not r["done"]]
    todo = selected(planned["rows"], opts.only, opts.limit, str(grid.path))
    first = sum(sum(r["cost"].values()) for r in todo)
    shared_s = _shared_seconds(planned["shared"], [grid.align_label(r["cell"]) for r in todo])
    log(f"bench: {len(planned['rows'])} cells, {len(planned['rows']) - len(pending)} done, "
        f"running {len(todo)} (estimated {_hours(first)} + {_hours(shared_s)} shared stages, "
        "less where an aligned model is cached)")  # fmt: skip
    runner = _CellRunner(grid, out, sets, metrics, log)
    spent, estimated = 0.0, 0.0
    queue, deferred, ran = list(todo), set(), 0
    while queue:
        row = queue.pop(0)
        cell = row["cell"]
        skipped = f"bench: {cell.id}: {{}} runs it; left to it"
        with try_folder_lock(
            cell.folder(out), note=log, busy=lambda who, line=skipped: log(line.format(who))
        ) as held:
            if held is None:
                continue
            if is_done(cell, grid.config(cell), out, grid.cfg.evaluate_on):
                continue  # finished by another process since the plan
            try:  # shared: built once, not in the cell's time; waited for only when nothing
                # else is left to run (a cell seen before has had every other cell tried)
                runner.aligned_model(grid.align_label(cell), wait=cell.id in deferred)
            except FolderBusy:
                deferred.add(cell.id)
                queue.append(row)
                continue
            t0 = time.perf_counter()
            resumed = runner.run(cell)
        ran += 1
        took = time.perf_counter() - t0
        done = f"{cell.id} {DONE_IN} {took:.0f} s{RESUMED * resumed}"
        if opts.worker:  # its parent counts the cells of all workers and gives the ETA
            log(f"bench: {done}")
            continue
        if not resumed:  # a resumed cell's time is part of its cost: no rate to learn from
            spent += took
            estimated += sum(row["cost"].values())
        cost_left = sum(sum(r["cost"].values()) for r in queue)
        eta = eta_text(spent, estimated, cost_left, len(queue), workers=1)
        log(f"bench: [{ran}/{len(todo)}] {done}; ETA {eta}")


def _metric_or_none(cfg: Any) -> str:
    try:
        return task_metric(cfg)
    except ValueError:
        return "label"  # the task evaluates no fine-tuning accuracy


class _CellRunner:
    """Runs cells, holding what they share: aligned models and evaluation keys."""

    def __init__(self, grid: Grid, out: Path, sets: dict, metrics: dict, log: Any):
        self.grid, self.out, self.sets, self.metrics, self.log = grid, out, sets, metrics, log
        self.aligned: dict[str, Path | None] = {}
        self.aligned_files: dict[str, str | None] = {}
        self._digests: dict[Path, str] = {}

    def aligned_model(self, label: str, wait: bool = True) -> Path | None:
        """Aligned model `label` (Grid.align_label), built or found, and evaluated before any
        attack (None: the grid attacks the base model as it is). bds.lock.FolderBusy when
        another process builds it and not `wait`."""
        if label not in self.aligned:
            cfg = self.grid.aligned_config(label)
            model = None
            if self.grid.cfg.align:
                from bds.align import align_stage
                from bds.data.pipeline import prepare_data

                model = align_stage(cfg, prepare_data(cfg.data), self.log, wait=wait)
            # which model the cells attacked, by content: one rebuilt elsewhere may differ
            self.aligned_files[label] = self._model_digest(model)
            task = self.grid.label_task(label)
            evals = {}
            for split in self.grid.cfg.evaluate_on:
                # the attack does not need it: left to a process evaluating it now
                found = self.evaluate(cfg, task, split, model, None, wait=wait)
                if found is None:
                    break
                evals[split] = str(found)
            if len(evals) < len(self.grid.cfg.evaluate_on):
                self.log(f"bench: {label}: its evaluation before any attack runs elsewhere")
            else:
                self._record_aligned(label, model or cfg.model.name, cfg, evals)
            self.aligned[label] = model
        return self.aligned[label]

    def _model_digest(self, model: Path | None) -> str | None:
        """The aligned model's files digest, hashed once per process (a built model does not
        change; every cell's evaluation key and record needs it)."""
        if model is None:
            return None
        if model not in self._digests:
            self._digests[model] = _files_digest(model)
        return self._digests[model]

    def _record_aligned(self, label: str, model: Any, cfg: Any, evals: dict[str, str]) -> None:
        from bds.lock import folder_lock

        with folder_lock(self.out, note=self.log, wait=True):  # one writer at a time
            path = self.out / ALIGNED_FILE
            known = json.loads(path.read_text()) if path.is_file() else {}
            known[label] = {
                "model": str(model),
                "files": self.aligned_files[label],
                "alignment_defense": cfg.align.defense.name if self.grid.cfg.align else None,
                "evals": evals,
            }
            write_json(path, known)

    def evaluate(
        self,
        cfg: Any,
        task: str,
        split: str,
        model: Path | None,
        adapter: Path | None,
        wait: bool = True,
    ) -> Path | None:
        """The evaluation folder of (model, adapter) on `split`, run unless cached; None
        when another process runs it now and not `wait`."""
        from bds.bench.evalsets import eval_config_for
        from bds.eval.runner import RESULTS_FILE, run_eval
        from bds.lock import folder_lock, try_folder_lock

        ev = eval_config_for(cfg, self.sets[task][split], self.metrics[task])
        ev.adapter = str(adapter) if adapter else None
        model_cfg = cfg.model if model is None else _named(cfg.model, str(model))
        template = ev.template or cfg.data.template
        key = short_digest(
            {
                "model": model_cfg,
                "model_files": self._model_digest(model),
                "adapter": _files_digest(adapter) if adapter else None,
                "eval": {**to_jsonable(ev), "adapter": None},
                "template": template,
            }
        )
        folder = self.out / EVALS_DIR / key
        lock = folder_lock(folder, note=self.log, wait=True) if wait else try_folder_lock(
            folder, note=self.log, busy=lambda who: self.log(f"eval: {folder.name}: {who} runs it")
        )  # fmt: skip
        with lock as held:  # another process may run it now
            if held is None:
                return None
            if (folder / RESULTS_FILE).is_file():
                self.log(f"eval: {folder.name} done before, kept")
            else:
                self.log(f"eval ({split}): {adapter or model_cfg.name}")
                run_eval(model_cfg, ev, template, folder, log=self.log)
        return folder

    def run(self, cell: Cell) -> bool:
        """Run `cell` and write its record; whether it went on from an earlier, stopped run
        (its record's seconds then count this run only, and say so: `resumed`)."""
        from bds.bench.portable import compact
        from bds.bench.results import outcomes
        from bds.data.pipeline import prepare_data
        from bds.demo import attack_stage
        from bds.eval.runner import RESULTS_FILE

        cfg = self.grid.config(cell)
        aligned = self.aligned_model(self.grid.align_label(cell))
        earlier = finished_record(cell, cfg, self.out)  # a split added since: evaluate it alone
        folder = cell.folder(self.out)
        folder.mkdir(parents=True, exist_ok=True)
        # work of an earlier, stopped run that this one goes on from: a finished attack or
        # a training checkpoint (a run stopped before either restarts from nothing)
        resumed = earlier is None and any(
            (p / "summary.json").is_file() or any(p.glob("checkpoints/*"))
            for p in folder.glob("attack-*")
        )
        t0 = time.perf_counter()
        base = aligned if aligned is not None else Path(cfg.model.name)
        method = cfg.defense.name  # an alignment-stage defense's cell: the user's plain SFT
        run_dir = attack_stage(cfg, prepare_data(cfg.data), base, method, folder, self.log)
        train_s = time.perf_counter() - t0
        evals = dict(earlier["evals"]) if earlier else {}
        kept = dict(earlier.get("outcomes") or {}) if earlier else {}
        for split in self.grid.cfg.evaluate_on:
            if split not in evals:
                evals[split] = str(self.evaluate(cfg, cell.task, split, base, run_dir / "adapter"))
            if split not in kept:  # the record carries its outcomes (bench/portable.py)
                results_file = Path(evals[split]) / RESULTS_FILE
                kept[split] = compact(outcomes(json.loads(results_file.read_text())))
        summary = json.loads((run_dir / "summary.json").read_text())
        record = {
            "cell": to_jsonable(cell),
            "config_digest": config_digest(cfg),
            "config": cfg,
            "aligned_model": str(aligned) if aligned else None,
            "aligned_model_files": self.aligned_files.get(self.grid.align_label(cell)),
            "evals": evals,
            "outcomes": kept,
            "train": {
                "steps": summary.get("steps"),
                "wall_seconds": summary.get("wall_seconds"),
                "counts": summary.get("counts"),
            },
            "seconds": {"attack": round(train_s, 1), "total": round(time.perf_counter() - t0, 1)},
            "threads": _threads(),  # rounding differs between thread counts; recorded
        }
        if earlier:  # the attack ran before: its time, plus the evaluation added now
            total = earlier["seconds"]["total"] + record["seconds"]["total"]
            record["seconds"] = {**earlier["seconds"], "total": round(total, 1)}
        elif resumed:  # an earlier run's time is lost with it
            record["seconds"]["resumed"] = True
        write_json(folder / CELL_FILE, record)
        return resumed


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def _named(model_cfg: Any, name: str) -> Any:
    import dataclasses

    return dataclasses.replace(model_cfg, name=name)


def _files_digest(folder: Path) -> str:
    """SHA-256 over a folder's files (names and bytes): a retrained adapter differs."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(folder)).encode())
        with f.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
