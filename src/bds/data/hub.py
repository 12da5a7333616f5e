"""Hub sources: Hugging Face datasets with the reference protocol's preprocessing, or any
hub dataset in a TRL format (data/formats.py) with a field mapping.

The BDS, Vaccine, Booster and Lisa papers fine-tune on BeaverTails (harmful / safe) and on
SST-2, AG News, GSM8K and Alpaca (benign) with fixed prompts. Each preset reproduces that
preprocessing so results stay comparable with the papers. Loading needs the hub or its
local cache; every failure becomes a BDSInputError that says what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bds.data.schema import LoadedSource, Record
from bds.errors import BDSInputError

if TYPE_CHECKING:
    from bds.config import SourceConfig

Row = Mapping[str, Any]
Converted = tuple[list[Record], list[str]]
# (rows of the split, id prefix "<preset>/<split>") -> records and notes on what was skipped.
Converter = Callable[[Iterable[Row], str], Converted]

SST2_INSTRUCTION = "Analyze the sentiment of the input, and respond only positive or negative."
SST2_LABELS = ("negative", "positive")
AGNEWS_INSTRUCTION = (
    "Categorize the news article given in the input into one of the 4 categories:\n\n"
    "World\nSports\nBusiness\nSci/Tech\n"
)
AGNEWS_LABELS = ("World", "Sports", "Business", "Sci/Tech")
# GSM8K answers end in "#### 42"; the reference protocol rewrites the mark so the model
# learns to state "The final answer is: 42", which its evaluator parses.
GSM8K_MARK = "####"
GSM8K_ANSWER_PREFIX = "The final answer is: "


@dataclass(frozen=True)
class HubPreset:
    """A hub dataset and how its rows become records.

    `split` is the split loaded by default; `eval_split` is the one the reference protocol
    evaluates on (None where the preset is itself the evaluation set or has none).
    """

    dataset: str
    subset: str | None
    split: str
    convert: Converter
    eval_split: str | None = None


class _MissingColumn(Exception):
    """A row lacks a column; load_hub_source turns it into a BDSInputError naming the dataset."""

    def __init__(self, index: int, column: str):
        super().__init__(f"row {index} has no column {column!r}")
        self.index = index
        self.column = column


def _col(row: Row, column: str, index: int) -> Any:
    try:
        return row[column]
    except KeyError:
        raise _MissingColumn(index, column) from None


def _text(row: Row, column: str, index: int) -> str:
    value = _col(row, column, index)
    return "" if value is None else str(value)


# ------------------------------------------------------------- BeaverTails ---------------


def _beavertails(rows: Iterable[Row], prefix: str, *, keep_safe: bool, source: str) -> Converted:
    """Rows whose is_safe equals `keep_safe`, as prompt -> response records."""
    records: list[Record] = []
    skipped = 0
    for i, row in enumerate(rows):
        if bool(_col(row, "is_safe", i)) is not keep_safe:
            skipped += 1
            continue
        # `category` is a dict of harm categories -> bool; keep the ones that apply.
        categories = sorted(k for k, v in (row.get("category") or {}).items() if v)
        records.append(
            Record(
                id=f"{prefix}/{i}",
                instruction=_text(row, "prompt", i),
                response=_text(row, "response", i),
                source=source,
                meta={"categories": categories},
            )
        )
    return records, [f"{skipped} rows with is_safe={not keep_safe} skipped"]


def convert_beavertails_harmful(rows: Iterable[Row], prefix: str) -> Converted:
    return _beavertails(rows, prefix, keep_safe=False, source="harmful")


def convert_beavertails_safe(rows: Iterable[Row], prefix: str) -> Converted:
    return _beavertails(rows, prefix, keep_safe=True, source="safe")


def convert_beavertails_eval(rows: Iterable[Row], prefix: str) -> Converted:
    """Unsafe prompts only, each once: the model's answer to the prompt is what is scored."""
    records, notes = _beavertails(rows, prefix, keep_safe=False, source="harmful")
    seen: set[str] = set()
    unique: list[Record] = []
    for record in records:
        if record.instruction not in seen:
            seen.add(record.instruction)
            unique.append(Record(record.id, record.instruction, "", source="harmful"))
    notes.append(f"{len(records) - len(unique)} duplicate prompts removed")
    return unique, notes


# ------------------------------------------------------------- benign tasks --------------


def _classification(
    rows: Iterable[Row], prefix: str, *, instruction: str, text_column: str, labels: tuple[str, ...]
) -> Converted:
    """Text classification: the input is the text, the response the label's word."""
    records: list[Record] = []
    unlabelled = 0
    for i, row in enumerate(rows):
        label = _col(row, "label", i)
        # SST-2's test split is unlabelled (-1); such rows cannot be trained or scored on.
        if not isinstance(label, int) or not 0 <= label < len(labels):
            unlabelled += 1
            continue
        word = labels[label]
        records.append(
            Record(
                id=f"{prefix}/{i}",
                instruction=instruction,
                input=_text(row, text_column, i).strip(),
                response=word,
                source="benign",
                meta={"label": word},
            )
        )
    return records, [f"{unlabelled} rows without a label in 0..{len(labels) - 1} skipped"]


def convert_sst2(rows: Iterable[Row], prefix: str) -> Converted:
    return _classification(
        rows, prefix, instruction=SST2_INSTRUCTION, text_column="sentence", labels=SST2_LABELS
    )


def convert_agnews(rows: Iterable[Row], prefix: str) -> Converted:
    return _classification(
        rows, prefix, instruction=AGNEWS_INSTRUCTION, text_column="text", labels=AGNEWS_LABELS
    )


def convert_gsm8k(rows: Iterable[Row], prefix: str) -> Converted:
    records: list[Record] = []
    no_answer = 0
    for i, row in enumerate(rows):
        answer = _text(row, "answer", i)
        if GSM8K_MARK not in answer:
            no_answer += 1  # nothing to score the model's final answer against
            continue
        final = answer.rsplit(GSM8K_MARK, 1)[1].strip().replace(",", "")
        records.append(
            Record(
                id=f"{prefix}/{i}",
                instruction=_text(row, "question", i),
                response=answer.replace(GSM8K_MARK, GSM8K_ANSWER_PREFIX),
                source="benign",
                meta={"answer": final},
            )
        )
    return records, [f"{no_answer} rows whose answer has no '{GSM8K_MARK}' final answer skipped"]


def convert_alpaca(rows: Iterable[Row], prefix: str) -> Converted:
    records: list[Record] = []
    empty = 0
    for i, row in enumerate(rows):
        output = _text(row, "output", i)
        if not output.strip():
            empty += 1  # an empty target teaches nothing
            continue
        records.append(
            Record(
                id=f"{prefix}/{i}",
                instruction=_text(row, "instruction", i),
                input=_text(row, "input", i),
                response=output,
                source="benign",
            )
        )
    return records, [f"{empty} rows with an empty output skipped"]


def convert_alpaca_eval(rows: Iterable[Row], prefix: str) -> Converted:
    """AlpacaEval's prompts (no input field); the response is the reference output its
    judge compares against. Outputs are exported for the external judge, not scored here."""
    records = [
        Record(
            id=f"{prefix}/{i}",
            instruction=_text(row, "instruction", i),
            response=_text(row, "output", i),
            source="benign",
            meta={"dataset": str(row.get("dataset", ""))},
        )
        for i, row in enumerate(rows)
    ]
    return records, []


_BEAVERTAILS = "PKU-Alignment/BeaverTails"

HUB_PRESETS: dict[str, HubPreset] = {
    "beavertails-harmful": HubPreset(_BEAVERTAILS, None, "30k_train", convert_beavertails_harmful),
    "beavertails-safe": HubPreset(_BEAVERTAILS, None, "30k_train", convert_beavertails_safe),
    "beavertails-eval": HubPreset(_BEAVERTAILS, None, "30k_test", convert_beavertails_eval),
    "sst2": HubPreset("stanfordnlp/sst2", None, "train", convert_sst2, eval_split="validation"),
    "agnews": HubPreset("fancyzhx/ag_news", None, "train", convert_agnews, eval_split="test"),
    "gsm8k": HubPreset("openai/gsm8k", "main", "train", convert_gsm8k, eval_split="test"),
    "alpaca": HubPreset("tatsu-lab/alpaca", None, "train", convert_alpaca),
    "alpaca-eval": HubPreset("tatsu-lab/alpaca_eval", "alpaca_eval", "eval", convert_alpaca_eval),
}


# ------------------------------------------------------------- loading -------------------


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def load_hub_source(cfg: SourceConfig, prompts_only: bool = False) -> LoadedSource:
    """Load the preset `cfg.name`, with `cfg.dataset` / `subset` / `split` overriding it; with
    no `name`, any hub dataset `cfg.dataset` in a TRL format, its columns mapped by `fields`."""
    name = cfg.name or ""
    preset = HUB_PRESETS.get(name)
    if preset is None and not cfg.dataset:
        raise BDSInputError(
            f"unknown hub source {cfg.name!r}; choose one of {', '.join(sorted(HUB_PRESETS))}, "
            "or give `dataset` (any hub dataset id) with `fields`"
        )
    dataset = cfg.dataset or preset.dataset
    subset = cfg.subset or (preset.subset if preset else None)
    split = cfg.split or (preset.split if preset else "train")
    label = f"hub source {name!r} ({dataset}" if preset else f"hub dataset ({dataset}"
    where = f"{label}{f' {subset}' if subset else ''}, split {split!r})"
    rows = _load_split(dataset, subset, split, where)
    if preset is None:
        from bds.data.formats import records_from_dataset

        prefix = f"{dataset}/{split}"
        loaded = records_from_dataset(rows, prefix, cfg.fields, cfg.label, prompts_only)
        loaded.name = where
        return loaded
    try:
        records, notes = preset.convert(rows, f"{name}/{split}")
    except _MissingColumn as exc:
        raise BDSInputError(
            f"{where}: row {exc.index} has no column {exc.column!r}; point `dataset` at one with "
            "the preset's columns, or give `dataset` without `name` and map columns with `fields`"
        ) from None
    if not records:
        detail = f" ({'; '.join(notes)})" if notes else ""
        raise BDSInputError(f"{where} gave no records{detail}; check the dataset and split")
    return LoadedSource(name, records, notes)


def _load_split(dataset: str, subset: str | None, split: str, where: str) -> Any:
    import datasets  # heavy; only hub sources need it

    try:
        return datasets.load_dataset(dataset, subset, split=split)
    except Exception as exc:
        raise BDSInputError(
            f"{where} could not be loaded ({_first_line(exc)}); check the dataset id and split, "
            "or set HF_HUB_OFFLINE=0 and log in (`hf auth login`), or use a local source instead"
        ) from exc
