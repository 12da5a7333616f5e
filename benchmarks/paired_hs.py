"""Paired bootstrap of HS between runs kept in several `bds bench` output folders.

`bds bench` computes paired CIs within one output folder. When the cells of a comparison
were run as separate bench processes (one cell per process, to run two at a time on a
small CPU), this script joins them: it reads each attacked model's per-prompt verdicts
(evals/*/results.json, matched to its cell by the adapter path) and gives, for every pair of
arms, the mean difference in HS and its two-level paired bootstrap CI over seeds and
prompts (bds.stats.paired_bootstrap).

    python benchmarks/paired_hs.py --arm mix=runs/a,runs/b --arm bds=runs/c,runs/d \\
        --judge refusal-classifier --output benchmarks/results/x.json
An arm is label=folder[,folder...]; within an arm, each (seed) must appear once.
"""

from __future__ import annotations

import argparse
import json
import re
from itertools import combinations
from pathlib import Path

from bds.stats import paired_bootstrap

CELL = re.compile(r"/p=([0-9.]+)/([^/]+)/seed=(\d+)/")


def arm_verdicts(folders: list[Path], judge: str) -> dict[int, dict[str, float]]:
    """seed -> {prompt id: 1.0 if judged harmful} for every attacked model in the folders."""
    out: dict[int, dict[str, float]] = {}
    for folder in folders:
        for path in sorted((folder / "evals").glob("*/results.json")):
            doc = json.loads(path.read_text())
            adapter = doc["protocol"]["model"].get("adapter")
            match = CELL.search(adapter or "")
            if not match:  # the aligned model's evaluation
                continue
            seed = int(match.group(3))
            if seed in out:
                raise SystemExit(f"{path}: seed {seed} appears twice in this arm")
            rows = doc["generations"]["harmful_score"]
            out[seed] = {r["id"]: float(r["verdicts"][judge]["harmful"]) for r in rows}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arm", action="append", required=True, help="label=folder[,folder]")
    parser.add_argument("--judge", default="refusal-classifier")
    parser.add_argument("--output")
    args = parser.parse_args()
    arms = {}
    for spec in args.arm:
        label, folders = spec.split("=", 1)
        arms[label] = arm_verdicts([Path(f) for f in folders.split(",")], args.judge)
    seeds = sorted(set.intersection(*(set(v) for v in arms.values())))
    if not seeds:
        raise SystemExit("no seed is common to every arm")
    items = sorted(set.intersection(*(set(v[s]) for v in arms.values() for s in seeds)))
    table = {
        label: {"hs": 100 * sum(v[s][i] for s in seeds for i in items) / (len(seeds) * len(items))}
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
    doc = {
        "judge": args.judge,
        "seeds": seeds,
        "prompts": len(items),
        "arms": table,
        "pairs": pairs,
    }
    text = json.dumps(doc, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
