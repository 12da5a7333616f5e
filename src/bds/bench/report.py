"""The bench report: report.md, a self-contained report.html (plots inlined as base64 PNG,
no external assets) and plots/ (HS vs FA per defense with CIs, HS vs over-refusal per
cell, HS vs p, over-refusal)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from bds.bench.results import FA, LABELS, METRICS
from bds.bench.verdict import HEADER, NOTE, TITLE, verdict_rows


def _ci(stat: dict[str, float] | None) -> str:
    if stat is None:
        return "–"
    return f"{stat['mean']:.1f} [{stat['low']:.1f}, {stat['high']:.1f}]"


def _diff(stat: dict[str, float] | None, seeds: int | None = None) -> str:
    """A paired difference; where the seeds both defenses ran (the stat's `seeds`) are fewer
    than those of the row's mean (`seeds`), it says on how many."""
    if stat is None:
        return "–"
    notes = [] if stat["low"] > 0 or stat["high"] < 0 else ["ns"]
    if seeds is not None and stat.get("seeds", seeds) < seeds:
        notes.append(f"{stat['seeds']} seed{'s' * (stat['seeds'] > 1)}")
    note = f" ({'; '.join(notes)})" if notes else ""
    return f"{stat['mean']:+.1f} [{stat['low']:+.1f}, {stat['high']:+.1f}]{note}"


def tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) per (split, task, p): the scores, then the paired differences
    of each defense to each reference defense the grid ran."""
    groups: dict[tuple, list[dict]] = {}
    for row in results["statistics"]:
        groups.setdefault((row["split"], row["task"], row["p"]), []).append(row)
    out = []
    for (split, task, p), rows in groups.items():
        metrics = [m for m in METRICS if any(m in r["metrics"] for r in rows)]
        title = f"{split} split, task {task}, p = {p:g}"
        header = ["defense", "seeds"] + [f"{LABELS[m]} (%)" for m in metrics]
        body = [
            [r["defense"], str(len(r["seeds"]))]
            + [_ci(r["metrics"].get(m, {}).get("mean")) for m in metrics]
            for r in rows
        ]
        out.append((title, header, body))
        refs = [ref for ref in results["protocol"]["grid"]["references"]
                if any(r["defense"] == ref for r in rows)]  # fmt: skip
        diffs = []
        for ref in refs:
            for r in rows:
                found = [r["metrics"].get(m, {}).get("vs", {}).get(ref) for m in metrics]
                if any(found):
                    seeds = len(r["seeds"])
                    diffs.append([r["defense"], ref] + [_diff(f, seeds) for f in found])
        if diffs:
            header = ["defense", "minus"] + [f"Δ{LABELS[m]} (points)" for m in metrics]
            out.append((f"{title}: differences", header, diffs))
    return out


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + [
        "| " + " | ".join(row) + " |" for row in rows
    ]


def verdict_lines(results: dict[str, Any]) -> list[str]:
    """The verdict on the expected result (bds.bench.verdict): its rule, then its table;
    empty where no group has SFT and BDS with FA. The report's section and the README's."""
    found = verdict_rows(results)
    return [NOTE, "", *markdown_table(HEADER, found)] if found else []


def report_split(results: dict[str, Any]) -> str:
    """The split results are reported on: the last of evaluate_on (validation, then test)."""
    return results["protocol"]["grid"]["evaluate_on"][-1]


def comparison(results: dict[str, Any], minus: str, split: str | None = None) -> list[str]:
    """A compact table per (task, p) of the report split: each defense's scores (mean over
    seeds, 95 % CI) and its paired difference to the defense `minus`, then the aligned models
    before any attack (an alignment-stage defense's own one named after it). What the README
    shows of a bench (benchmarks/readme_tables.py)."""
    split = split or report_split(results)
    rows = [r for r in results["statistics"] if r["split"] == split]
    lines: list[str] = []
    for task, p in dict.fromkeys((r["task"], r["p"]) for r in rows):
        mine = [r for r in rows if (r["task"], r["p"]) == (task, p)]
        metrics = [m for m in METRICS if any(m in r["metrics"] for r in mine)]
        header = ["defense", "seeds"] + [f"{LABELS[m]} (%)" for m in metrics]
        header += [f"Δ{LABELS[m]} vs {minus}" for m in metrics]
        body = []
        for r in sorted(mine, key=lambda r: (r["defense"] != minus, r["defense"])):
            got = [r["metrics"].get(m, {}) for m in metrics]
            seeds = len(r["seeds"])
            vs = [
                "–" if r["defense"] == minus else _diff(g.get("vs", {}).get(minus), seeds)
                for g in got
            ]
            body.append([r["defense"], str(seeds)] + [_ci(g.get("mean")) for g in got] + vs)
        for label, splits in results["aligned_model_scores"].items():
            aligned = splits.get(split)
            if not aligned or label.split("/")[0] != task:
                continue
            name = f" ({label.split('/', 1)[1]})" if "/" in label else ""  # aligned by a defense
            scores = [f"{aligned[m]:.1f}" if m in aligned else "–" for m in metrics]
            body.append([f"aligned model{name}, no attack", "–"] + scores + ["–"] * len(metrics))
        if lines:
            lines.append("")
        lines += [f"*{split} split, task {task}, p = {p:g}*", ""] + markdown_table(header, body)
    return lines


def _split_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for name, info in results["protocol"]["splits"].items():
        lines.append(f"- **{name}**: {info['used_for']}. {info['note']}".rstrip())
    for task, splits in results["protocol"]["eval_sets"].items():
        for split, sets in splits.items():
            for metric, s in sets.items():
                sl = s["slice"]
                lines.append(
                    f"  - {task}, {split}, {LABELS[metric]}: {s['items']} items of {s['source']} "
                    f"(skip {sl['skip']}, take {sl['take'] or 'all'}); none in the training data"
                    + (
                        f" ({s['training_overlap_left_out']} such prompts left out first)"
                        if s["training_overlap_left_out"]
                        else ""
                    )
                )
    return lines


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    m = results["machine"]
    done = len(results["cells"])
    total = results["total_cells"]
    parts = [
        "# Bench report",
        "",
        f"Grid `{results['grid']}`: {done} of {total} cells finished. Machine: "
        f"{m['cpu_model']} ({m['torch_cpu_capability']}), {m['cpus']} CPUs, GPU: {m['cuda']}.",
        "",
        "Values in % (mean over seeds, 95 % CI). Δ: paired difference to the reference "
        "defense on the same seeds and items (two-level paired bootstrap over seeds and "
        "items); (ns): the CI contains 0. HS: harmful answers to harmful prompts (headline "
        "judge); FA: fine-tuning task accuracy; over-refusal: benign requests refused.",
        "",
        *_provenance(results),
        "## Evaluation splits",
        *_split_lines(results),
        "",
    ]
    if found := verdict_lines(results):
        parts += [f"## {TITLE}", "", *found, ""]
    for title, header, body in tables(results):
        parts += [f"## {title}", "", *markdown_table(header, body), ""]
    if results["aligned_model_scores"]:
        parts += ["## The aligned model before any attack", ""]
        for task, splits in results["aligned_model_scores"].items():
            for split, scores in splits.items():
                text = ", ".join(f"{LABELS[k]} {v:.1f}" for k, v in scores.items())
                parts.append(f"- {task}, {split}: {text}")
        parts.append("")
    parts += _cell_times(results)
    parts += ["## Plots", ""] + [f"![{p}](plots/{p})" for p in plots]
    return "\n".join(parts) + "\n"


def _provenance(results: dict[str, Any]) -> list[str]:
    """Where finished cells came from another bench folder, and whether the cells of one
    aligned model attacked more than one build of it."""
    lines = []
    sources: dict[str, int] = {}
    for cell in results["cells"]:
        if cell.get("restored_from"):
            sources[cell["restored_from"]] = sources.get(cell["restored_from"], 0) + 1
    for source, n in sources.items():
        lines.append(f"{n} cells restored from `{source}` (run in another bench folder).")
    for label, digests in results.get("aligned_model_builds", {}).items():
        lines.append(
            f"The cells of aligned model `{label}` attacked {len(digests)} builds of it (files "
            f"{', '.join(digests)}): rebuilt elsewhere, it differed; their seeds compare with "
            "less certainty."
        )
    return [*lines, ""] if lines else []


def _cell_times(results: dict[str, Any]) -> list[str]:
    """Measured wall seconds per cell, by defense (what a grid's cost rates can be fit to).
    A resumed cell's record counts only the run that finished it: left out of the means."""
    by: dict[str, list[dict]] = {}
    for cell in results["cells"]:
        by.setdefault(cell["defense"], []).append(cell)
    if not by:
        return []
    lines = ["## Measured cell times", "",
             "| defense | cells | torch threads | attack s (mean) | cell s (mean) |",
             "|---|---|---|---|---|"]  # fmt: skip
    mean_total, resumed = {}, 0
    for defense, everyone in sorted(by.items()):
        cells = [c for c in everyone if not c["seconds"].get("resumed")]
        resumed += len(everyone) - len(cells)
        if not cells:
            continue
        attack = sum(c["seconds"]["attack"] for c in cells) / len(cells)
        mean_total[defense] = sum(c["seconds"]["total"] for c in cells) / len(cells)
        threads = ", ".join(sorted({str(c.get("threads") or "?") for c in cells}))
        lines.append(f"| {defense} | {len(cells)} | {threads} | {attack:.0f} | "
                     f"{mean_total[defense]:.0f} |")  # fmt: skip
    note = ("A cell run by one of several workers (`--jobs`: fewer threads each, several "
            "cells at once) takes longer on its own; ? marks a cell from before threads "
            "were recorded.")  # fmt: skip
    if resumed:
        note += (f" Left out of the means: {resumed} cell(s) resumed after a stop (a record "
                 "holds only the time of the run that finished the cell).")  # fmt: skip
    pending = results.get("pending_by_defense", {})
    spent = _spent(results["cells"], resumed)
    return [*lines, "", note, "", spent, "", *_projection(pending, mean_total)]


def _spent(cells: list[dict], resumed: int) -> str:
    """The finished cells' time together: what the grid has cost so far, in one process's
    hours (the `resumed` cells count only the run that finished them: a lower bound)."""
    hours = sum(c["seconds"]["total"] for c in cells) / 3600
    text = (f"The {len(cells)} finished cells took {hours:.1f} h of cell time together (the sum "
            "of their measured times, one process each; shared stages, i.e. aligned models, "
            "not counted")  # fmt: skip
    if resumed:
        text += f"; {resumed} resumed cell(s) count only the run that finished them"
    return text + ")."


def _projection(pending: dict[str, int], mean_total: dict[str, float]) -> list[str]:
    """The unfinished cells' time at each defense's measured mean cell time (not counting
    the shared stages, i.e. aligned models, nor defenses with no finished cell yet)."""
    left = {d: n for d, n in pending.items() if n}
    if not left:
        return ["Every cell of the grid has finished.", ""]
    known = {d: n for d, n in left.items() if d in mean_total}
    hours = sum(n * mean_total[d] for d, n in known.items()) / 3600
    text = (
        f"{sum(left.values())} cells left. At the measured mean cell time of each defense "
        f"(this machine, every task alike), the {sum(known.values())} of them whose defense "
        f"has a finished cell would take {hours:.1f} h, shared stages not counted"
    )
    unknown = sorted(d for d in left if d not in mean_total)
    if unknown:
        text += f"; no time measured yet for {', '.join(unknown)}"
    # cell times are one process's; workers sharing the cores each run slower, all together faster
    text += (
        ". That is one process's time, cell after cell; N bench workers (`--jobs N`) take about "
        "1/N of it where the cells were timed at the thread count workers run at (the "
        "threads column)"
    )
    return [text + ".", ""]


def html_page(results: dict[str, Any], plot_dir: Path, plots: list[str]) -> str:
    """The report as one HTML file: every plot inlined, no link to anything outside."""
    body = [
        f"<h1>Bench report</h1><p>{html.escape(results['grid'])}: "
        f"{len(results['cells'])} cells finished.</p>",  # fmt: skip
        "<h2>Evaluation splits</h2><ul>",
    ]
    body += [f"<li>{html.escape(line.strip('- '))}</li>" for line in _split_lines(results)]
    body.append("</ul>")
    sections = [(TITLE, HEADER, found)] if (found := verdict_rows(results)) else []
    for title, header, rows in sections + tables(results):
        body.append(f"<h2>{html.escape(title)}</h2><table><tr>")
        body += [f"<th>{html.escape(h)}</th>" for h in header]
        body.append("</tr>")
        for row in rows:
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
        body.append("</table>")
    for name in plots:
        data = base64.b64encode((plot_dir / name).read_bytes()).decode()
        body.append(
            f'<h3>{html.escape(name)}</h3><img alt="{name}" src="data:image/png;base64,{data}">'
        )
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}")  # fmt: skip
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Bench report</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")  # fmt: skip


def plot(results: dict[str, Any], folder: Path) -> list[str]:
    """hs_vs_fa-<task>.png, hs_vs_over_refusal-<task>.png, hs_vs_p-<task>.png,
    over_refusal-<task>.png (the report split)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    split = report_split(results)
    rows = [r for r in results["statistics"] if r["split"] == split]
    references = results["protocol"]["grid"]["references"]
    styles = plot_styles(sorted({r["defense"] for r in rows}), references)
    names = []
    for task in sorted({r["task"] for r in rows}):
        mine = [r for r in rows if r["task"] == task]
        defenses = sorted({r["defense"] for r in mine})
        both = [r for r in mine if FA in r["metrics"] and "harmful_score" in r["metrics"]]
        if both:
            # one panel per p: the same defense at three ratios in one panel read as three defenses
            fa_ps = sorted({r["p"] for r in both})
            fig, axes = plt.subplots(1, len(fa_ps), figsize=(1.5 + 3.5 * len(fa_ps), 4),
                                     sharey=True, squeeze=False)  # fmt: skip
            for ax, p in zip(axes[0], fa_ps, strict=True):
                for r in sorted((r for r in both if r["p"] == p), key=lambda r: r["defense"]):
                    fa, hs = r["metrics"][FA]["mean"], r["metrics"]["harmful_score"]["mean"]
                    ax.errorbar([fa["mean"]], [hs["mean"]], xerr=_err([fa]), yerr=_err([hs]),
                                linestyle="none", capsize=3, label=r["defense"],
                                **styles[r["defense"]])  # fmt: skip
                ax.set(xlabel="FA (%)", title=f"p = {p:g}")
            axes[0][0].set_ylabel("HS (%)")
            fig.suptitle(f"{task}: HS vs FA ({split})")
            names.append(_save(fig, folder, f"hs_vs_fa-{task}.png"))
        name = _hs_vs_refusal(results, task, split, styles, folder)
        if name:
            names.append(name)
        ps = sorted({r["p"] for r in mine})
        for metric, stem in (("harmful_score", "hs_vs_p"), ("over_refusal", "over_refusal")):
            if not any(metric in r["metrics"] for r in mine):
                continue
            fig, ax = plt.subplots(figsize=(7.5, 4))
            for i, d in enumerate(defenses):
                pts = sorted((r for r in mine if r["defense"] == d and metric in r["metrics"]),
                             key=lambda r: r["p"])  # fmt: skip
                stats = [r["metrics"][metric]["mean"] for r in pts]
                # p on evenly spaced slots, each defense nudged sideways so that the many
                # defenses measured at one p do not hide one another's error bars
                x = [ps.index(r["p"]) + _dodge(i, len(defenses)) for r in pts]
                ax.errorbar(x, [s["mean"] for s in stats], yerr=_err(stats), capsize=3,
                            label=d, **styles[d])  # fmt: skip
            ax.set_xticks(range(len(ps)), [f"{p:g}" for p in ps])
            ax.set(xlabel="harmful ratio p", ylabel=f"{LABELS[metric]} (%)",
                   title=f"{task}: {LABELS[metric]} vs p ({split})")  # fmt: skip
            names.append(_save(fig, folder, f"{stem}-{task}.png"))
    return names


def _hs_vs_refusal(results: dict[str, Any], task: str, split: str, styles: dict, folder: Path
                   ) -> str | None:  # fmt: skip
    """hs_vs_over_refusal-<task>.png: every cell a point, one panel per p. A defense that
    lowers HS only by refusing more moves along the line its seeds draw, not below it (in
    the embedded grid, HS falls ~0.9 points per point of over-refusal across Mix's seeds)."""
    import matplotlib.pyplot as plt

    cells = [c for c in results["cells"] if c["task"] == task
             and {"harmful_score", "over_refusal"} <= set(c["scores"].get(split, {}))]  # fmt: skip
    if not cells:
        return None
    ps = sorted({c["p"] for c in cells})
    fig, axes = plt.subplots(1, len(ps), figsize=(1.5 + 3.5 * len(ps), 4), sharex=True,
                             sharey=True, squeeze=False)  # fmt: skip
    aligned = results.get("aligned_model_scores", {}).get(task, {}).get(split, {})
    for ax, p in zip(axes[0], ps, strict=True):
        for c in sorted((c for c in cells if c["p"] == p), key=lambda c: c["defense"]):
            score = c["scores"][split]
            ax.plot([score["over_refusal"]], [score["harmful_score"]], linestyle="none",
                    label=c["defense"], **styles[c["defense"]])  # fmt: skip
        if {"harmful_score", "over_refusal"} <= set(aligned):
            ax.plot([aligned["over_refusal"]], [aligned["harmful_score"]], "k*", markersize=9,
                    label="aligned model, no attack")  # fmt: skip
        ax.set(xlabel="over-refusal (%)", title=f"p = {p:g}")
    axes[0][0].set_ylabel("HS (%)")
    fig.suptitle(f"{task}: HS vs over-refusal, one point a cell ({split})")
    return _save(fig, folder, f"hs_vs_over_refusal-{task}.png")


def plot_styles(defenses: list[str], references: list[str]) -> dict[str, dict[str, Any]]:
    """One colour and marker per defense, the same in every plot of a report.

    Matplotlib's default cycle has ten colours, so a grid of 15 defenses gave SFT and
    another defense the same red. The grid's references (SFT, Mix, BDS) take tab10's first,
    strongest colours and are drawn larger and on top; the rest take the other tab10 colours,
    then tab20's light ones, with seven markers besides.
    """
    import matplotlib

    strong = matplotlib.colormaps["tab10"].colors
    colours = list(strong) + list(matplotlib.colormaps["tab20"].colors[1::2])
    ordered = [d for d in references if d in defenses] + [
        d for d in defenses if d not in references
    ]
    markers = "osD^vPX"
    return {
        d: {"color": colours[i % len(colours)], "marker": markers[i % len(markers)],
            "markersize": 7 if d in references else 5, "zorder": 3 if d in references else 2}
        for i, d in enumerate(ordered)
    }  # fmt: skip


def _dodge(i: int, n: int, width: float = 0.5) -> float:
    return 0.0 if n < 2 else (i / (n - 1) - 0.5) * width


def _err(stats: list[dict[str, float]]) -> list[list[float]]:
    return [[s["mean"] - s["low"] for s in stats], [s["high"] - s["mean"] for s in stats]]


def _save(fig: Any, folder: Path, name: str) -> str:
    import matplotlib.pyplot as plt

    # one legend for every panel, outside them: inside, a dozen defenses cover points
    seen: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    labels = sorted(seen)
    fig.legend([seen[k] for k in labels], labels, fontsize=7, loc="upper left",
               bbox_to_anchor=(1.0, 0.95))  # fmt: skip
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return name


def write_report(results: dict[str, Any], out: Path) -> None:
    plots = plot(results, out / "plots")
    (out / "report.md").write_text(markdown(results, plots), encoding="utf-8")
    (out / "report.html").write_text(html_page(results, out / "plots", plots), encoding="utf-8")
