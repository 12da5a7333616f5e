"""Evaluation splits made concrete: each slice written once to the bench folder as JSONL
(the cells all read the same file, so their items pair one to one), and checked disjoint
from the other split and from every record the task trains or aligns on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from bds.bench.cells import FA, Grid
from bds.bench.config import EvalSetConfig
from bds.data.schema import Record
from bds.errors import BDSInputError
from bds.io import short_digest

SETS_DIR = "eval-sets"


def slice_records(
    eset: EvalSetConfig, metric: str, where: str, training: set[str] | None = None
) -> tuple[list[Record], str, int]:
    """(the slice's records, the source's name, prompts left out as training overlap); an
    error if the source holds too few, or overlaps `training` without drop_training_overlap."""
    from bds.data.sources import load_source
    from bds.eval.runner import _evaluation_split

    source = _evaluation_split(eset.source) if metric == FA else eset.source
    loaded = load_source(source, prompts_only=metric != FA)
    pool, dropped = loaded.records, 0
    if training and eset.drop_training_overlap:
        pool = [r for r in pool if _key(r) not in training]
        dropped = len(loaded.records) - len(pool)
    records = pool[eset.skip :]
    if eset.take is not None:
        if len(records) < eset.take:
            raise BDSInputError(
                f"{where}: the source {loaded.name} holds {len(pool)} usable records, so "
                f"skip {eset.skip} leaves {len(records)}, fewer than take {eset.take}; lower one"
            )
        records = records[: eset.take]
    if not records:
        raise BDSInputError(f"{where}: skip {eset.skip} leaves no record of {loaded.name}")
    if training and not eset.drop_training_overlap:
        overlap = sum(_key(r) in training for r in records)
        if overlap:
            raise BDSInputError(
                f"{where}: {overlap} of its {len(records)} prompts are also in the task's "
                "training or alignment data; set drop_training_overlap: true or use another slice"
            )
    return records, loaded.name, dropped


def count_items(eset: EvalSetConfig, metric: str, where: str) -> int:
    """Items in a slice: `take` where given (no download), else the loaded slice's size."""
    if eset.take is not None:
        return eset.take
    if eset.source.kind == "hub":
        raise BDSInputError(f"{where}: give `take` so the hub source can be counted offline")
    return len(slice_records(eset, metric, where)[0])


def _key(record: Record) -> str:
    from bds.data.text import normalize

    return normalize(f"{record.instruction}\n{record.input}")


def materialize(grid: Grid, out: Path, task_metric: dict[str, str]) -> dict[str, Any]:
    """Write every split's slices under OUT/eval-sets/; return {task: {split: {metric:
    {path, items, source, ...}}}} with each slice's overlap counts (an error if any)."""
    done: dict[str, Any] = {}
    for task in grid.cfg.tasks:
        training = training_keys(grid, task)
        per_split: dict[str, dict[str, Any]] = {}
        keys: dict[tuple[str, str], set[str]] = {}
        for split in grid.cfg.evaluate_on + [
            s for s in grid.cfg.splits if s not in grid.cfg.evaluate_on
        ]:
            per_split[split] = {}
            for metric, eset in grid.eval_sets(task, split).items():
                where = f"{grid.path}: task {task}, {split} split, {metric}"
                records, name, dropped = slice_records(eset, metric, where, training)
                keys[(split, metric)] = {_key(r) for r in records}
                if metric == FA:  # the gold answer travels as the response
                    from bds.eval.metrics import reference_of

                    tm = task_metric[task]
                    records = [
                        dataclasses.replace(r, response=reference_of(r, tm)) for r in records
                    ]
                digest = short_digest([r.to_dict() for r in records])
                path = out / SETS_DIR / split / f"{metric}-{digest}.jsonl"
                if not path.is_file():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
                    tmp.replace(path)
                per_split[split][metric] = {
                    "path": str(path),
                    "source": name,
                    "slice": dataclasses.asdict(eset),
                    "items": len(records),
                    "training_overlap_left_out": dropped,
                }
        _check_splits_disjoint(grid, task, keys, per_split)
        done[task] = per_split
    return done


def _check_splits_disjoint(grid: Grid, task: str, keys: dict, per_split: dict) -> None:
    for (split, metric), mine in keys.items():
        for (other, metric2), theirs in keys.items():
            if metric2 != metric or other == split:
                continue
            shared = len(mine & theirs)
            per_split[split][metric][f"overlap_with_{other}"] = shared
            if shared and split < other:
                raise BDSInputError(
                    f"{grid.path}: task {task}: the {split} and {other} splits share {shared} "
                    f"{metric} prompts; make their slices disjoint"
                )


def training_keys(grid: Grid, task: str) -> set[str]:
    """Every prompt the task's cells can train or align on (whole sources, not one cell's
    sample: a prompt any seed may draw counts), alignment-stage defenses' harmful pools
    included."""
    from bds.align import retain_requests
    from bds.data.sources import load_source
    from bds.defenses.harmful_pool import load_pool

    cfg = grid.task_config(task)
    keys: set[str] = set()
    for source in (cfg.data.benign, cfg.data.harmful, cfg.data.alignment):
        if source is not None:
            keys |= {_key(r) for r in load_source(source).records}
    keys |= {_key(r) for r in retain_requests(cfg)}
    for label in grid.align_labels():
        defense = grid.aligned_config(label).align.defense
        if grid.label_task(label) == task and "harmful" in defense.needs:
            keys |= {_key(r) for r in load_pool(defense.harmful)}
    return keys


def eval_config_for(cfg: Any, sets: dict[str, dict[str, Any]], task_metric: str) -> Any:
    """`cfg.eval` reading the split's written slices."""
    import copy

    from bds.config import SourceConfig

    ev = copy.deepcopy(cfg.eval)
    ev.metrics = [m for m in ev.metrics if m in sets]  # a split evaluates what it names
    for metric, info in sets.items():
        source = SourceConfig(kind="local", path=info["path"])
        if metric == "harmful_score":
            ev.harmful_score.prompts = source
        elif metric == "over_refusal":
            ev.over_refusal.prompts = source
        else:
            ev.finetune_accuracy.data = dataclasses.replace(source, label="benign")
            ev.finetune_accuracy.metric = task_metric
    return ev
