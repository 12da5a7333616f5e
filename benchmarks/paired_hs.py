"""Paired bootstrap of HS (or another metric) between runs kept in several `bds bench` folders.

`bds bench` computes paired CIs within one output folder. When the cells of a comparison
were run as separate bench processes (one cell per process, to run two at a time on a
small CPU), this script joins them: it reads each attacked model's per-prompt verdicts
(the headline judge's, as `bds bench` reads them: bds.bench.results.outcomes) and gives, for every pair of
arms, the mean difference in HS and its two-level paired bootstrap CI over seeds and
prompts (bds.stats.paired_bootstrap). --metric (repeatable) adds over_refusal or
finetune_accuracy, paired the same way over their items.

    python benchmarks/paired_hs.py --arm mix=runs/a,runs/b --arm bds=runs/c,runs/d \\
        --output benchmarks/results/x.json
An arm is label=folder[,folder...]; within an arm, each (seed) must appear once. A folder
is a bench folder or one of its cell subfolders (e.g. runs/b/cells/sentiment/p=0/mix: one
defense at one p); --split picks the evaluation split (default: the cell's last one).
"""

from __future__ import annotations

import argparse
import json
from itertools import combinations
from pathlib import Path

from bds.bench.results import outcomes
from bds.bench.runner import CELL_FILE
from bds.stats import paired_bootstrap

HS = "harmful_score"
METRICS = (HS, "over_refusal", "finetune_accuracy")


def parse_arm(spec: str) -> tuple[str, list[Path]]:
    """`label=folder[,folder...]` -> (label, folders)."""
    label, folders = spec.split("=", 1)
    return label, [Path(f) for f in folders.split(",")]


def arm_cells(folders: list[Path]) -> dict[int, dict]:
    """seed -> the cell record of every finished cell in the bench folders (its `folder`
    added); a seed found twice in one arm is an error."""
    found: dict[int, dict] = {}
    for folder in folders:
        root = folder / "cells" if (folder / "cells").is_dir() else folder
        for path in sorted(root.glob(f"**/{CELL_FILE}")):
            record = {**json.loads(path.read_text()), "folder": path.parent}
            seed = int(record["cell"]["seed"])
            if seed in found:
                raise SystemExit(f"{path}: seed {seed} appears twice in this arm")
            found[seed] = record
    return found


def arm_outcomes(folders: list[Path], split: str | None = None) -> dict[int, dict]:
    """seed -> every metric's per-item outcomes (bds.bench.results.outcomes) of each
    finished cell in the folders, read once (its cell record names its evaluation folder)."""
    out: dict[int, dict] = {}
    for seed, record in arm_cells(folders).items():
        evals = record["evals"]
        if split is not None and split not in evals:
            raise SystemExit(f"{record['folder']}: no {split} evaluation (it has {list(evals)})")
        eval_folder = evals[split] if split is not None else list(evals.values())[-1]
        found = outcomes(json.loads((Path(eval_folder) / "results.json").read_text()))
        out[seed] = {**found, "folder": eval_folder}
    return out


def verdicts(arm: dict[int, dict], metric: str, judges: set[str]) -> dict[int, dict[str, float]]:
    """seed -> {item id: 1.0 if positive (HS: judged harmful by the headline judge;
    over-refusal: refused; FA: correct)}; adds the metric's judge to `judges`."""
    out: dict[int, dict[str, float]] = {}
    for seed, found in arm.items():
        if metric not in found:
            raise SystemExit(f"{found['folder']}: no {metric} (it has {sorted(found)})")
        scores = found[metric]
        if scores["judge"]:
            judges.add(scores["judge"])
        out[seed] = dict(zip(scores["ids"], map(float, scores["values"]), strict=True))
    return out


def compare(arms: dict[str, dict[int, dict[str, float]]]) -> dict:
    """Each arm's mean (%) on the seeds and items common to all, and every pair's paired
    difference with its two-level bootstrap CI (points)."""
    seeds = sorted(set.intersection(*(set(v) for v in arms.values())))
    if not seeds:
        raise SystemExit("no seed is common to every arm")
    items = sorted(set.intersection(*(set(v[s]) for v in arms.values() for s in seeds)))
    means = {
        label: 100 * sum(v[s][i] for s in seeds for i in items) / (len(seeds) * len(items))
        for label, v in arms.items()
    }
    pairs = {}
    for a, b in combinations(arms, 2):
        xa = [[arms[a][s][i] for i in items] for s in seeds]
        xb = [[arms[b][s][i] for i in items] for s in seeds]
        ci = paired_bootstrap(xa, xb)
        pairs[f"{a} - {b}"] = {
            k: (100 * v if k in ("mean", "low", "high") else v) for k, v in ci.items()
        }
    return {"seeds": seeds, "items": len(items), "arms": means, "pairs": pairs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arm", action="append", required=True, help="label=folder[,folder]")
    parser.add_argument("--split", help="evaluation split (default: each cell's last)")
    parser.add_argument(
        "--metric", action="append", choices=METRICS, help=f"repeatable; default {HS}"
    )
    parser.add_argument("--output")
    args = parser.parse_args()
    read = {label: arm_outcomes(folders, args.split) for label, folders in map(parse_arm, args.arm)}
    judges: set[str] = set()
    metrics = {
        metric: compare({label: verdicts(arm, metric, judges) for label, arm in read.items()})
        for metric in args.metric or [HS]
    }
    doc = {
        "judge": ", ".join(sorted(judges)),
        "split": args.split or "each cell's last",
        "arm_folders": {k: [str(f) for f in v] for k, v in map(parse_arm, args.arm)},
        "metrics": metrics,
    }
    text = json.dumps(doc, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
