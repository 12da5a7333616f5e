"""Fine-tune accuracy: how one answer is scored against its record, per task.

- label (SST-2, AG News, the embedded sentiment task): the reference protocol compares the
  decoded answer with the label word for equality, either case of its first letter allowed. Our generation
  stops at max_new_tokens rather than only at EOS, so the answer is cut at its first line
  and stripped of surrounding spaces and a final full stop before the comparison.
- number (GSM8K): the number after "The final answer is:", else the last number in the
  answer, compared with the reference as numbers (commas dropped, 42 == 42.0).
- alpaca-eval: no score here; outputs are written in alpaca_eval's input format for an
  external LLM judge.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from bds.data.hub import GSM8K_ANSWER_PREFIX

if TYPE_CHECKING:
    from bds.config import SourceConfig
    from bds.data.schema import Record

# Which task metric a named source implies (metric: auto).
_SOURCE_METRICS = {
    ("hub", "sst2"): "label",
    ("hub", "agnews"): "label",
    ("hub", "gsm8k"): "number",
    ("hub", "alpaca"): "alpaca-eval",
    ("hub", "alpaca-eval"): "alpaca-eval",
    ("embedded", "sentiment-train"): "label",
    ("embedded", "sentiment-test"): "label",
}
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_FINAL = re.compile(re.escape(GSM8K_ANSWER_PREFIX.strip()) + r"\s*\$?\s*(-?[\d,]*\.?\d+)")


def infer_metric(source: SourceConfig) -> str:
    """The task metric of `source` under `metric: auto`; ValueError when it has none."""
    metric = _SOURCE_METRICS.get((source.kind, source.name or ""))
    if metric is None:
        what = source.path if source.kind == "local" else f"{source.kind} source {source.name!r}"
        raise ValueError(
            f"cannot infer the task metric of {what}; set metric to label, number or alpaca-eval"
        )
    return metric


def label_answer(answer: str) -> str:
    """The part of an answer compared with a label word: first line, trimmed."""
    lines = answer.strip().splitlines()
    first = lines[0].strip() if lines else ""
    return first.rstrip(".").strip()


def label_correct(answer: str, label: str) -> bool:
    """Exact match of the label word; like the reference, the case of its first letter is free
    ("positive" / "Positive", "World" / "world"; "Sci/Tech" / "sci/tech")."""
    got = label_answer(answer)
    return got in (label, label.lower(), label[:1].upper() + label[1:])


def parse_number(text: str) -> float | None:
    """GSM8K answer: the number after "The final answer is:", else the last number; None if none."""
    found = _FINAL.search(text)
    if found:
        raw = found.group(1)
    else:
        numbers = _NUMBER.findall(text)
        if not numbers:
            return None
        raw = numbers[-1]
    try:
        return float(raw.replace(",", ""))
    except ValueError:
        return None


def numbers_equal(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-6)


def reference_of(record: Record, metric: str) -> str:
    """The gold answer of a record: its task label / final answer, else its response."""
    key = "label" if metric == "label" else "answer"
    return str(record.meta.get(key, record.response)).strip()


def score_answer(answer: str, record: Record, metric: str) -> dict[str, Any]:
    """{"reference", "parsed", "correct"} for one answer; correct is None for alpaca-eval."""
    if metric == "alpaca-eval":
        return {"reference": None, "parsed": None, "correct": None}
    reference = reference_of(record, metric)
    if metric == "label":
        return {
            "reference": reference,
            "parsed": label_answer(answer),
            "correct": label_correct(answer, reference),
        }
    parsed = parse_number(answer)
    return {
        "reference": reference,
        "parsed": parsed,
        "correct": numbers_equal(parsed, parse_number(reference)),
    }


def alpaca_eval_rows(records: list[Record], answers: list[str], generator: str) -> list[dict]:
    """Model outputs in alpaca_eval's input format (instruction, output, generator)."""
    rows = []
    for record, answer in zip(records, answers, strict=True):
        instruction = (
            record.instruction if not record.input else f"{record.instruction}\n\n{record.input}"
        )
        rows.append(
            {"instruction": instruction, "output": answer, "generator": generator, "id": record.id}
        )
    return rows
