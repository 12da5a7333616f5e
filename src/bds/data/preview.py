"""`bds data preview`: what a config's data looks like before anything trains on it."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from bds.data.pipeline import PreparedData
from bds.data.schema import Record
from bds.data.text import shorten
from bds.data.tokenize import TruncationReport, tokenize_records

EXAMPLES_PER_SOURCE = 3
# Harmful text is cut shorter: the preview shows what a sample is, not how to do harm.
PREVIEW_WIDTH = {"harmful": 48}
DEFAULT_WIDTH = 90


@dataclass
class SetPreview:
    name: str
    counts: Counter
    report: TruncationReport | None
    examples: dict[str, list[Record]]


def preview_sets(
    data: PreparedData, tokenizer: Any | None, template: str, max_length: int, truncation: str
) -> list[SetPreview]:
    out = []
    for name, records in (
        ("D_ft (user data)", data.finetune),
        ("D_safe (alignment)", data.alignment),
    ):
        if not records:
            continue
        report = None
        if tokenizer is not None:
            _, report = tokenize_records(records, tokenizer, template, max_length, truncation)
        examples: dict[str, list[Record]] = defaultdict(list)
        for r in records:
            if len(examples[r.source]) < EXAMPLES_PER_SOURCE:
                examples[r.source].append(r)
        out.append(SetPreview(name, Counter(r.source for r in records), report, dict(examples)))
    return out


def length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    ordered = sorted(lengths)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "mean": round(statistics.fmean(ordered), 1),
    }


def example_line(record: Record) -> str:
    width = PREVIEW_WIDTH.get(record.source, DEFAULT_WIDTH)
    prompt = shorten(record.instruction, width)
    if record.input:
        prompt = f"{shorten(record.instruction, 32)} | {shorten(record.input, width)}"
    return f"[{record.id}] {prompt} => {shorten(record.response, width)}"


def render(previews: list[SetPreview], data: PreparedData, console: Any) -> None:
    from rich.table import Table

    for role, src in data.sources.items():
        console.print(f"[bold]{role}[/] source [cyan]{src.name}[/]: {len(src)} records")
        for note in src.notes:
            console.print(f"  - {note}")
    mix = data.mix
    console.print(
        f"D_ft mix ({mix.strategy}): {mix.n_harmful} harmful + {mix.n_benign} benign = {len(mix.records)}"
    )
    for p in previews:
        table = Table(title=p.name)
        for col in ("source", "count", "tokens min/median/p95/max", "truncated", "dropped"):
            table.add_column(col)
        lengths_by_source: dict[str, list[int]] = defaultdict(list)
        if p.report is not None:
            records = data.finetune if p.name.startswith("D_ft") else data.alignment
            for r, n in zip(records, p.report.lengths, strict=True):
                lengths_by_source[r.source].append(n)
        for source, count in sorted(p.counts.items()):
            stats = length_stats(lengths_by_source.get(source, []))
            span = (
                f"{stats['min']}/{stats['median']:g}/{stats['p95']}/{stats['max']}"
                if stats
                else "-"
            )
            truncated = str(p.report.truncated[source]) if p.report else "-"
            dropped = (
                str(p.report.dropped[source] + p.report.prompt_too_long[source])
                if p.report
                else "-"
            )
            table.add_row(source, str(count), span, truncated, dropped)
        console.print(table)
        if p.report is not None:
            console.print(f"  {p.report.summary()}")
        for source, examples in sorted(p.examples.items()):
            console.print(f"  [bold]{source}[/] examples:")
            for r in examples:
                console.print(
                    f"    {example_line(r)}", markup=False, highlight=False, soft_wrap=True
                )
