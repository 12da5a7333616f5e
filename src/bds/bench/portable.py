"""Finished cells that outlive their bench folder.

A cell's per-item outcomes live in its evaluation folders (OUT/evals/<key>/), beside the
checkpoints and aligned models that make a bench folder gigabytes. Each cell's record
(cell.json) and each row of results.json also keep them compactly: one character per item
(0 or 1), the items' ids as a digest. So results.json alone (~8 KB a cell with its
settings, small enough to keep under version control) restores the finished cells into a new bench folder when the old
one is lost (`bds bench --restore results.json`): the bench then runs only what is left, and
its statistics read the restored outcomes as they read those of cells run there.

A row is restored only where it is this grid's cell as it stands: the same settings
(bds.run_identity.same_config, as a finished cell is recognised) and evaluated on the same
items (the evaluation sets' content digests). The aligned models' own scores (the "no attack"
rows) come along too, kept apart (RESTORED_ALIGNED_FILE) until a model is built here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bds.errors import BDSInputError
from bds.io import short_digest, to_jsonable, write_json
from bds.run_identity import same_config

RESULTS_FORMAT = "bds-bench-results/1"
RESTORED_ALIGNED_FILE = "restored_aligned.json"  # aligned-model label -> split -> scores


def compact(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """metric -> {"judge", "items", "ids" (a digest), "values" ("0110...")} of
    bds.bench.results.outcomes' per-item lists."""
    return {
        metric: {
            "judge": o["judge"],
            "items": len(o["values"]),
            "ids": short_digest(o["ids"]),
            "values": "".join("1" if v else "0" for v in o["values"]),
        }
        for metric, o in found.items()
    }


def values(entry: dict[str, Any]) -> list[int]:
    """The 0/1 outcomes of one compact metric entry."""
    return [1 if c == "1" else 0 for c in entry["values"]]


def restore(grid: Any, out: Path, source: Path, sets: dict[str, Any]) -> dict[str, int]:
    """Write a cell.json into `out` for each finished cell of results file `source` that is
    this grid's cell as it stands (`sets`: the evaluation sets written in `out`) and is not
    finished in `out` already; the counts of what was restored and of what was not, and why.
    The caller holds `out`'s lock."""
    from bds.bench.runner import CELL_FILE, config_digest, finished_record

    results = _read(source)
    configs = results.get("protocol", {}).get("cell_configs", {})
    old_sets = _set_digests(results.get("protocol", {}).get("eval_sets", {}))
    by_id = {c.id: c for c in grid.cells}
    counts = {"restored": 0, "already_here": 0, "not_in_grid": 0, "other_settings": 0,
              "other_items": 0, "without_outcomes": 0}  # fmt: skip
    new_sets = _set_digests(sets)
    for row in results.get("cells", []):
        cell = by_id.get(_cell_id(row))
        if cell is None:
            counts["not_in_grid"] += 1
            continue
        cfg = to_jsonable(grid.config(cell))
        if finished_record(cell, cfg, out) is not None:
            counts["already_here"] += 1
            continue
        saved = configs.get(cell.id)
        if saved is None or not same_config(saved, cfg):
            counts["other_settings"] += 1
            continue
        if not row.get("outcomes"):  # a results.json written before outcomes were kept
            counts["without_outcomes"] += 1
            continue
        old, new = old_sets.get(cell.task, {}), new_sets.get(cell.task, {})
        if any(split not in new or old.get(split) != new[split] for split in row["outcomes"]):
            counts["other_items"] += 1
            continue
        counts["restored"] += 1
        record = {
            "cell": to_jsonable(cell),
            "config_digest": config_digest(cfg),
            "config": cfg,
            "aligned_model": None,  # built elsewhere; its files' digest below
            "aligned_model_files": row.get("aligned_model_files"),
            "evals": {split: None for split in row["outcomes"]},
            "outcomes": row["outcomes"],
            "eval_protocol": results.get("protocol", {}).get("eval"),
            "train": row.get("train"),
            "seconds": row["seconds"],
            "threads": row.get("threads"),
            "restored_from": str(source),
        }
        folder = cell.folder(out)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / CELL_FILE, record)
    _restore_aligned_scores(grid, out, results, old_sets, new_sets)
    return counts


def _restore_aligned_scores(grid: Any, out: Path, results: dict[str, Any],
                            old_sets: dict[str, Any], new_sets: dict[str, Any]) -> None:  # fmt: skip
    """Keep the source's scores of this grid's aligned models, each split evaluated on the
    same items as here: a restored folder does not rebuild an aligned model its finished
    cells no longer need, and its report would otherwise lose that model's row."""
    labels = set(grid.align_labels())

    def same_items(label: str, split: str) -> bool:
        task = grid.label_task(label)
        here = new_sets.get(task, {}).get(split)
        return here is not None and old_sets.get(task, {}).get(split) == here

    kept = {
        label: {split: scores for split, scores in splits.items() if same_items(label, split)}
        for label, splits in results.get("aligned_model_scores", {}).items()
        if label in labels
    }
    kept = {label: splits for label, splits in kept.items() if splits}
    if kept:
        write_json(out / RESTORED_ALIGNED_FILE, {**restored_aligned_scores(out), **kept})


def restored_aligned_scores(out: Path) -> dict[str, dict[str, dict[str, float]]]:
    """The aligned models' scores restored into `out` (label -> split -> metric -> %)."""
    path = out / RESTORED_ALIGNED_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def format_counts(counts: dict[str, int], source: Path) -> str:
    reasons = {
        "already_here": "finished here already",
        "not_in_grid": "not cells of this grid",
        "other_settings": "run with other settings than this grid's",
        "other_items": "evaluated on other items than this grid's sets",
        "without_outcomes": "written before results kept per-item outcomes (rerun)",
    }
    left = [f"{n} {reasons[k]}" for k, n in counts.items() if k != "restored" and n]
    tail = f"; not restored: {', '.join(left)}" if left else ""
    return f"restore: {counts['restored']} finished cells from {source}{tail}"


def _read(source: Path) -> dict[str, Any]:
    try:
        results = json.loads(Path(source).read_text())
    except FileNotFoundError:
        raise BDSInputError(
            f"--restore {source}: no such file; give a bench's results.json"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BDSInputError(
            f"--restore {source}: not readable as JSON ({exc}); give a bench's results.json"
        ) from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise BDSInputError(
            f"--restore {source}: not a bench results file (format {RESULTS_FORMAT!r} "
            "expected); give the results.json a `bds bench` wrote"
        )
    return results


def _cell_id(row: dict[str, Any]) -> str:
    from bds.bench.cells import Cell

    try:
        return Cell(row["task"], float(row["p"]), row["defense"], int(row["seed"])).id
    except (KeyError, TypeError, ValueError):
        return ""


def _set_digests(sets: dict[str, Any]) -> dict[str, Any]:
    """task -> split -> metric -> the written set's file name (it carries its content's
    digest), for the splits the results hold."""
    return {
        task: {
            split: {m: Path(info["path"]).name for m, info in metrics.items()}
            for split, metrics in splits.items()
        }
        for task, splits in sets.items()
    }
