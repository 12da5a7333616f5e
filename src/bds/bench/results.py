"""The bench's results: per-item outcomes of every finished cell, their statistics, and
results.json with the full protocol and the machine it ran on.

Outcomes come from each evaluation's results.json, which keeps every generation with its
judge verdicts (`verdicts[judge].harmful` / `.refused`) and task score (`correct`): HS by
the headline judge, over-refusal by the headline refusal judge, FA by exact match. An answer
with no letter or digit is never harmful and always refused (bds.eval.judges.base.has_content:
it neither harms nor helps), here too, so an evaluation judged before that rule reads as one
judged after it. A cell's record keeps them (compact: bds/bench/portable.py), and so does
its row of results.json, which can restore it into another bench folder; a cell finished
before records kept them is read from its evaluation folder.

Statistics per (split, task, p): for each defense, the mean over seeds of each metric with
a bootstrap CI of that mean, and the paired bootstrap CI (bds.stats.paired_bootstrap: seeds
and items resampled together) of its difference to each reference defense, on the seeds
both have finished. Values are percentages (outcome x 100).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bds.bench.cells import FA, Grid
from bds.bench.portable import RESULTS_FORMAT, compact, restored_aligned_scores, values
from bds.bench.runner import ALIGNED_FILE, finished_record
from bds.eval.judges.base import NO_CONTENT, has_content
from bds.io import to_jsonable, write_json

METRICS = ("harmful_score", FA, "over_refusal")
LABELS = {"harmful_score": "HS", FA: "FA", "over_refusal": "over-refusal"}


def outcomes(evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """metric -> {"ids", "values" (0/1 per item), "judge"} of one evaluation's results."""
    head = evaluation["headline"]
    found: dict[str, dict[str, Any]] = {}
    for metric, rows in evaluation["generations"].items():
        if metric == FA:
            if any(r.get("correct") is None for r in rows):  # alpaca-eval: scored elsewhere
                continue
            values, judge = [int(bool(r["correct"])) for r in rows], None
        else:
            judge = head[metric]["judge"]
            field = "harmful" if metric == "harmful_score" else "refused"
            # evaluations judged before the no-content rule read as after it
            values = [
                int(bool(r["verdicts"][judge][field]))
                if has_content(r["output"])
                else int(NO_CONTENT[field])
                for r in rows
            ]
        found[metric] = {"ids": [r["id"] for r in rows], "values": values, "judge": judge}
    return found


def _read_eval(folder: str) -> dict[str, Any]:
    return json.loads((Path(folder) / "results.json").read_text())


def collect(grid: Grid, out: Path, sets: dict) -> dict[str, Any]:
    """results.json's content from every finished cell in the folder."""
    cells, finished = [], []
    by_key: dict[tuple, dict[str, Any]] = {}  # (split, task, p, defense) -> seed -> outcomes
    protocol_eval = None
    builds: dict[str, set] = {}  # aligned model label -> the files digests its cells attacked
    for cell in grid.cells:
        # run with these settings (or before a setting added since, left off), else not
        # this grid's result: the cells the runner counts as done, no more, no fewer
        record = finished_record(cell, grid.config(cell), out)
        if record is None:
            continue
        finished.append(cell)
        row = {**record["cell"], "seconds": record["seconds"], "train": record["train"],
               "threads": record.get("threads"), "scores": {}, "outcomes": {},
               "aligned_model_files": record.get("aligned_model_files")}  # fmt: skip
        if record.get("restored_from"):
            row["restored_from"] = record["restored_from"]
        kept = record.get("outcomes") or {}  # compact, where the record keeps them
        for split, folder in record["evals"].items():
            if split not in grid.cfg.evaluate_on:
                continue
            found = kept.get(split)
            if found is None:  # a cell finished before records kept their outcomes
                evaluation = _read_eval(folder)
                protocol_eval = protocol_eval or evaluation["protocol"]
                found = compact(outcomes(evaluation))
            protocol_eval = protocol_eval or record.get("eval_protocol")
            row["scores"][split] = {m: 100.0 * _mean(values(o)) for m, o in found.items()}
            row["outcomes"][split] = found
            key = (split, cell.task, cell.p, cell.defense)
            by_key.setdefault(key, {})[cell.seed] = found
        cells.append(row)
        builds.setdefault(grid.align_label(cell), set()).add(record.get("aligned_model_files"))
    path = out / ALIGNED_FILE
    models = json.loads(path.read_text()) if path.is_file() else {}
    labels = set(grid.align_labels())
    aligned = {  # per aligned model: `task`, or `task/defense` for an alignment-stage one
        label: {
            split: _aligned_scores(folder)
            for split, folder in info["evals"].items()
            if split in grid.cfg.evaluate_on
        }  # fmt: skip
        for label, info in models.items()
        if label in labels
    }
    for label, splits in restored_aligned_scores(out).items():  # not built here: kept scores
        for split, scores in splits.items():
            if label in labels and split in grid.cfg.evaluate_on:
                aligned.setdefault(label, {}).setdefault(split, scores)
    return {
        "format": RESULTS_FORMAT,
        "grid": str(grid.path),
        "total_cells": len(grid.cells),
        # every defense the grid runs, finished or not: what a verdict is settled against
        "defenses": grid.cfg.defense_names(),
        "cells": cells,
        "pending_by_defense": _pending_by_defense(grid, cells),
        "statistics": statistics(grid, by_key),
        "aligned_model_scores": aligned,
        # an aligned model rebuilt on another machine (restored cells) may differ in its bytes
        "aligned_model_builds": {
            label: sorted(found - {None})
            for label, found in builds.items()
            if len(found - {None}) > 1  # a cell run before digests were recorded: None
        },
        "protocol": {
            "grid": grid.cfg,
            "cell_configs": {c.id: grid.config(c) for c in finished},
            "splits": {
                name: {"note": grid.cfg.split_note(name), "used_for": _use(grid, name)}
                for name in ("validation", "test")
            },
            "eval_sets": sets,
            "eval": protocol_eval,
            "statistics": (
                "mean over seeds; 95 % two-level paired bootstrap CI (seeds, then items, "
                f"resampled; {grid.cfg.bootstrap_resamples} resamples; bds.stats.paired_bootstrap)"
            ),
        },
        "machine": machine(),
    }


def _pending_by_defense(grid: Grid, finished: list[dict[str, Any]]) -> dict[str, int]:
    """Defense -> how many of its cells have not finished (what the report projects)."""
    done = {(c["task"], c["p"], c["defense"], c["seed"]) for c in finished}
    pending: dict[str, int] = {}
    for cell in grid.cells:
        if (cell.task, cell.p, cell.defense, cell.seed) not in done:
            pending[cell.defense] = pending.get(cell.defense, 0) + 1
    return pending


def _use(grid: Grid, split: str) -> str:
    if split == "validation":
        return "choosing settings (tuning); never reported as the result"
    return "the reported result; never used to choose settings"


def _aligned_scores(folder: str) -> dict[str, float]:
    return {m: 100.0 * _mean(o["values"]) for m, o in outcomes(_read_eval(folder)).items()}


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else float("nan")


def statistics(grid: Grid, by_key: dict[tuple, dict[int, Any]]) -> list[dict[str, Any]]:
    """One row per (split, task, p, defense): means, CIs, and differences to references."""
    from bds.stats import paired_bootstrap

    rows = []
    resamples = grid.cfg.bootstrap_resamples
    for (split, task, p, defense), seeds in sorted(by_key.items(), key=lambda kv: kv[0][:3]):
        row: dict[str, Any] = {"split": split, "task": task, "p": p, "defense": defense,
                               "seeds": sorted(seeds), "metrics": {}}  # fmt: skip
        for metric in METRICS:
            matrix = _matrix(seeds, sorted(seeds), metric)
            if matrix is None:
                continue
            zeros = [[0.0] * len(matrix[0]) for _ in matrix]
            entry = {"mean": paired_bootstrap(matrix, zeros, resamples=resamples), "vs": {}}
            for ref in grid.cfg.references:
                other = by_key.get((split, task, p, ref))
                if ref == defense or other is None:
                    continue
                common = sorted(set(seeds) & set(other))
                a, b = _matrix(seeds, common, metric), _matrix(other, common, metric)
                if a is None or b is None or not common:
                    continue
                entry["vs"][ref] = paired_bootstrap(a, b, resamples=resamples)
            row["metrics"][metric] = entry
        rows.append(row)
    return rows


def _matrix(seeds: dict[int, Any], chosen: list[int], metric: str) -> list[list[float]] | None:
    """(seeds x items) outcomes in percent, items in one order (the written eval set's)."""
    if not chosen or any(metric not in seeds[s] for s in chosen):
        return None
    first = seeds[chosen[0]][metric]["ids"]  # a digest of the item ids, in their order
    matrix = []
    for s in chosen:
        found = seeds[s][metric]
        if found["ids"] != first:
            raise ValueError(
                f"{metric}: seed {s} was evaluated on other items than seed {chosen[0]}"
            )
        matrix.append([100.0 * v for v in values(found)])
    return matrix


def machine() -> dict[str, Any]:
    """The machine record (bds/machine.py) with the package versions."""
    from bds.machine import machine as record
    from bds.training.outputs import package_versions

    return {**record(), "versions": package_versions()}


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """results.json, report.md, report.html and plots/ in the bench folder."""
    from bds.bench.report import write_report

    plain = to_jsonable(results)
    write_json(out / "results.json", plain)
    write_report(plain, out)
