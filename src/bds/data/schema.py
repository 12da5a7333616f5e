"""The one record schema every source produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# What a record is known to be. `unknown` is the honest label for user data.
SOURCE_LABELS = ("benign", "harmful", "safe", "unknown")

# How a record is rendered into tokens (data/templates.py):
# instruction: instruction (+ input) -> response, through data.template (alpaca or chat);
# text: language modelling, every token of `response` is learned, no template;
# conversation: `messages` through the model's chat template, the turns in `trained` learned.
RecordForm = Literal["instruction", "text", "conversation"]


@dataclass(frozen=True)
class Record:
    """One sample: (instruction, optional input, response), a text, or a conversation.

    `id` is stable across runs and never re-indexed, so weight tables can be joined back
    to the user's data. `source` says what the sample is known to be (see SOURCE_LABELS).
    `meta` carries source-specific extras (task label, origin file, human score).
    `form` says how it becomes tokens (RecordForm). A conversation keeps its `messages`
    ({"role", "content"} dicts) and the indices of the turns the model learns (`trained`);
    its instruction / response then hold the last prompt turn and the learned turns' text,
    for previews, the scheduler's encoder and the judges.
    """

    id: str
    instruction: str
    response: str
    input: str = ""
    source: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    form: RecordForm = "instruction"
    messages: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    trained: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in SOURCE_LABELS:
            raise ValueError(f"record {self.id}: source {self.source!r} not in {SOURCE_LABELS}")
        if (self.form == "conversation") != bool(self.messages):
            raise ValueError(f"record {self.id}: messages are given exactly for conversations")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "instruction": self.instruction,
            "input": self.input,
            "response": self.response,
            "source": self.source,
        }
        if self.form != "instruction":  # instruction records keep their historical form
            out.update(form=self.form, messages=list(self.messages), trained=list(self.trained))
        return out


@dataclass
class LoadedSource:
    """Records from one source plus notes on everything filtered out (never silent)."""

    name: str
    records: list[Record]
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)
