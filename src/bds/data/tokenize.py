"""Tokenisation with prompt tokens masked from the loss, and an explicit truncation policy.

Samples longer than max_length are truncated (response cut from the end) or dropped, as
the config says; either way they are counted, per source, in a TruncationReport.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from bds.data.schema import Record
from bds.data.templates import TemplateName, adds_eos, render_segments

IGNORE_INDEX = -100  # label value the CE loss skips (prompt and padding tokens)
TruncationPolicy = Literal["truncate", "drop"]


@dataclass
class TokenizedSample:
    id: str
    source: str
    input_ids: list[int]
    labels: list[int]

    @property
    def n_response_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


@dataclass
class TruncationReport:
    """What happened to every sample on its way to token ids."""

    max_length: int
    policy: str
    total: int = 0
    kept: int = 0
    truncated: Counter = field(default_factory=Counter)  # by source
    dropped: Counter = field(default_factory=Counter)  # by source (over length, policy=drop)
    prompt_too_long: Counter = field(default_factory=Counter)  # prompt leaves no answer room
    lengths: list[int] = field(default_factory=list)  # untruncated lengths

    def summary(self) -> str:
        t, d, p = (
            sum(self.truncated.values()),
            sum(self.dropped.values()),
            sum(self.prompt_too_long.values()),
        )
        return (
            f"{self.kept}/{self.total} samples kept at max_length={self.max_length} "
            f"({t} truncated, {d} dropped as too long, {p} dropped: prompt fills the context)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_length": self.max_length,
            "policy": self.policy,
            "total": self.total,
            "kept": self.kept,
            "truncated": dict(self.truncated),
            "dropped_too_long": dict(self.dropped),
            "dropped_prompt_too_long": dict(self.prompt_too_long),
        }


def encode(record: Record, tokenizer: Any, template: TemplateName) -> tuple[list[int], list[int]]:
    """(input ids, labels) with no length limit: masked tokens labelled IGNORE_INDEX.

    Each rendered piece is tokenised on its own (special tokens added to the first only), so
    no token straddles a masked / learned boundary; Alpaca and text answers end with EOS."""
    input_ids: list[int] = []
    labels: list[int] = []
    segments = render_segments(record, template, tokenizer)
    if not segments or segments[0][1]:
        segments = [("", False), *segments]  # BOS (if the tokenizer adds one) is never learned
    for i, (text, learned) in enumerate(segments):
        ids = list(tokenizer(text, add_special_tokens=i == 0)["input_ids"])
        input_ids += ids
        labels += ids if learned else [IGNORE_INDEX] * len(ids)
    if adds_eos(record, template) and tokenizer.eos_token_id is not None:
        input_ids.append(tokenizer.eos_token_id)
        labels.append(tokenizer.eos_token_id)
    return input_ids, labels


def tokenize_records(
    records: list[Record],
    tokenizer: Any,
    template: TemplateName,
    max_length: int,
    truncation: TruncationPolicy = "truncate",
) -> tuple[list[TokenizedSample], TruncationReport]:
    """Token ids and labels (prompt masked with IGNORE_INDEX) for each kept record.

    Truncation cuts from the end; a sample left with no learned token is dropped and
    counted as prompt_too_long."""
    report = TruncationReport(max_length=max_length, policy=truncation)
    out = []
    for record in records:
        report.total += 1
        input_ids, labels = encode(record, tokenizer, template)
        length = len(input_ids)
        report.lengths.append(length)
        if length > max_length:
            if truncation == "drop":
                report.dropped[record.source] += 1
                continue
            input_ids, labels = input_ids[:max_length], labels[:max_length]
            if all(x == IGNORE_INDEX for x in labels):
                # Truncating would leave no answer token to learn from.
                report.prompt_too_long[record.source] += 1
                continue
            report.truncated[record.source] += 1
        out.append(TokenizedSample(record.id, record.source, input_ids, labels))
        report.kept += 1
    return out, report
