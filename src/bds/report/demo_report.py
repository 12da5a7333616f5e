"""The demo's report: results.json (full protocol), report.md, and plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from bds.io import to_jsonable, write_json

PLOTS = ("weights_by_source.png", "weight_trajectories.png", "scores.png")


def method_row(evaluation: dict[str, Any], summary: dict[str, Any] | None) -> dict[str, Any]:
    """HS (every judge), FA, over-refusal, and for BDS the weights' AUROC and means."""
    scores = evaluation["scores"]
    row: dict[str, Any] = {
        "harmful_score": scores.get("harmful_score"),
        "finetune_accuracy": scores.get("finetune_accuracy"),
        "over_refusal": scores.get("over_refusal"),
        "headline": evaluation["headline"],
    }
    if summary is not None:
        row["train_steps"] = summary["steps"]
        row["train_seconds"] = summary["wall_seconds"]
        if "weights" in summary:
            row["weights_auroc_benign_vs_harmful"] = summary["weights"]["auroc_benign_vs_harmful"]
            row["mean_weight"] = summary["weights"]["mean_weight"]
    return row


def write_report(
    cfg,
    opts,
    aligned: Path,
    runs: dict[str, Path],
    evals: dict[str, dict],
    out: Path,
    stage_seconds: dict[str, float] | None = None,
) -> dict:
    import json

    summaries = {m: json.loads((d / "summary.json").read_text()) for m, d in runs.items()}
    methods = {"aligned": method_row(evals["aligned"], None)}
    for m in runs:
        methods[m] = method_row(evals[m], summaries[m])
    first = next(iter(evals.values()))
    results = {
        "format": "bds-demo-results/1",
        "methods": methods,
        "protocol": {
            "config": cfg,
            "aligned_model": str(aligned),
            # how the base model was aligned: the `aligned` row scores it before any attack
            "alignment_defense": cfg.align.defense,
            "methods": list(runs),
            "fast": opts.fast,
            "finetune_counts": next(iter(summaries.values()))["counts"] if summaries else None,
            "eval": first["protocol"],
        },
        # wall time of every stage when it ran (align: ~0 when the aligned model was cached)
        "stage_seconds": stage_seconds or {},
        "total_seconds": round(sum((stage_seconds or {}).values()), 1),
    }
    write_json(out / "results.json", to_jsonable(results))
    plots = _plots(runs, methods, out / "plots")
    (out / "report.md").write_text(_markdown(results, plots), encoding="utf-8")
    return results


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """Rows for the terminal and markdown tables: method, HS, FA, over-refusal, AUROC."""
    rows = []
    for name, row in results["methods"].items():
        head = row["headline"]
        auroc = row.get("weights_auroc_benign_vs_harmful")
        rows.append(
            [
                name,
                _fmt(head.get("harmful_score", {}).get("value")),
                _fmt(head.get("finetune_accuracy", {}).get("value")),
                _fmt(head.get("over_refusal", {}).get("value")),
                "-" if auroc is None else f"{auroc:.3f}",
            ]
        )
    return rows


HEADERS = ["method", "HS (%)", "FA (%)", "over-refusal (%)", "weights AUROC"]


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _markdown(results: dict[str, Any], plots: list[str]) -> str:
    proto = results["protocol"]
    cfg = proto["config"]
    data = cfg.data
    lines = [
        "# BDS demo report",
        "",
        f"Model: `{cfg.model.name}` aligned with {cfg.align.defense.name} (cached at "
        f"`{proto['aligned_model']}`; row `aligned`: before the attack). "
        f"User data: N={data.n}, harmful ratio p={data.harmful_ratio} ({data.mix}), "
        f"template {data.template}, max_length {data.max_length}, seed {data.seed}.",
        "",
        "| " + " | ".join(HEADERS) + " |",
        "| " + " | ".join("---" for _ in HEADERS) + " |",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(results)]
    ev = proto["eval"]
    hs = ev["metrics"].get("harmful_score", {})
    lines += [
        "",
        f"HS: {hs.get('prompt_count')} AdvBench prompts held out from training, "
        f"greedy, max_new_tokens {hs.get('max_new_tokens')}, judged by "
        f"{', '.join(j['name'] for j in ev['judge_configs'])} (first is the headline).",
        "",
    ]
    if results.get("stage_seconds"):
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in results["stage_seconds"].items())
        lines += [f"Wall time: {results['total_seconds'] / 60:.1f} min ({stages}).", ""]
    lines += [f"![{p}](plots/{p})" for p in plots]
    return "\n".join(lines) + "\n"


def _plots(runs: dict[str, Path], methods: dict[str, Any], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    made = []
    weighted = {m: d / "weights.csv" for m, d in runs.items() if (d / "weights.csv").is_file()}
    if weighted:
        method, path = next(iter(weighted.items()))
        rows = list(csv.DictReader(path.open()))
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for source, colour in (("benign", "tab:blue"), ("harmful", "tab:red")):
            ws = [float(r["weight"]) for r in rows if r["source"] == source]
            if ws:
                ax.hist(ws, bins=30, alpha=0.6, color=colour, label=f"{source} ({len(ws)})")
        ax.set_xlabel(f"final weight ({method})")
        ax.set_ylabel("samples")
        ax.legend()
        fig.tight_layout()
        fig.savefig(folder / PLOTS[0], dpi=120)
        plt.close(fig)
        made.append(PLOTS[0])

        steps = sorted(int(k.split("_")[-1]) for k in rows[0] if k.startswith("w@step_"))
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for r in rows:
            colour = "tab:red" if r["source"] == "harmful" else "tab:blue"
            ax.plot(
                steps, [float(r[f"w@step_{s}"]) for s in steps], color=colour, alpha=0.25, lw=0.8
            )
        ax.set_xlabel("step")
        ax.set_ylabel("weight")
        ax.set_title("weight of every sample over training (red: harmful, blue: benign)")
        fig.tight_layout()
        fig.savefig(folder / PLOTS[1], dpi=120)
        plt.close(fig)
        made.append(PLOTS[1])

    fig, ax = plt.subplots(figsize=(7, 3.5))
    draw_scores(ax, methods)
    fig.tight_layout()
    fig.savefig(folder / PLOTS[2], dpi=120)
    plt.close(fig)
    made.append(PLOTS[2])
    return made


# The scores plot's bars: (headline metric, legend label, colour). Over-refusal sits beside
# HS and FA: a defense that refuses everything would look safe on HS alone.
SCORE_BARS = (
    ("harmful_score", "harmful score", "tab:red"),
    ("finetune_accuracy", "fine-tune accuracy", "tab:green"),
    ("over_refusal", "over-refusal", "tab:orange"),
)


def draw_scores(ax: Any, methods: dict[str, Any]) -> None:
    """Bars of each method's headline scores (%) on `ax`, a group per method; a metric no
    method was evaluated on gets no bars, a missing value none for that method."""
    names = list(methods)

    def value(method: str, metric: str) -> float:
        found = methods[method]["headline"].get(metric, {}).get("value")
        return float("nan") if found is None else float(found)

    shown = [b for b in SCORE_BARS if not all(math.isnan(value(m, b[0])) for m in names)]
    width = 0.8 / max(len(shown), 1)
    for j, (metric, label, colour) in enumerate(shown):
        values = [value(m, metric) for m in names]
        offset = (j - (len(shown) - 1) / 2) * width
        bars = ax.bar(
            [i + offset for i in range(len(names))], values, width, color=colour, label=label
        )
        ax.bar_label(bars, labels=["" if math.isnan(v) else f"{v:.0f}" for v in values], fontsize=7)
    ax.set_xticks(list(range(len(names))), names)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
