"""The one record schema every source produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# What a record is known to be. `unknown` is the honest label for user data.
SOURCE_LABELS = ("benign", "harmful", "safe", "unknown")


@dataclass(frozen=True)
class Record:
    """One (instruction, optional input, response) sample.

    `id` is stable across runs and never re-indexed, so weight tables can be joined back
    to the user's data. `source` says what the sample is known to be (see SOURCE_LABELS).
    `meta` carries source-specific extras (task label, origin file, human score).
    """

    id: str
    instruction: str
    response: str
    input: str = ""
    source: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCE_LABELS:
            raise ValueError(f"record {self.id}: source {self.source!r} not in {SOURCE_LABELS}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instruction": self.instruction,
            "input": self.input,
            "response": self.response,
            "source": self.source,
        }


@dataclass
class LoadedSource:
    """Records from one source plus notes on everything filtered out (never silent)."""

    name: str
    records: list[Record]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)
