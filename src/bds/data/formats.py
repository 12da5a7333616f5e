"""Rows (dicts from a file, a `datasets.Dataset` or a hub dataset) -> records, in TRL's formats.

Every dataset format TRL's SFTTrainer takes is read, in its standard (strings) and its
conversational ({"role", "content"} message lists) type:

    language modelling   {"text": "..."}                      {"messages": [...]}
    prompt-completion    {"prompt": "...", "completion": "..."}
                         {"prompt": [...], "completion": [...]}
    (prompt only, for evaluation prompts: {"prompt": "..."} or {"prompt": [...]})

plus this project's own instruction / input / response columns (Alpaca's). The layout is
chosen once per source from its columns (or from `fields`), then each row is checked:
a value of the wrong type (a message list where a string belongs, a number as a message)
is refused with its file and line, never turned into text with str().

What the model learns (prompt tokens are masked from the loss):
- prompt-completion, strings: the completion, after data.template renders the prompt;
- prompt-completion, messages: the completion's messages, through the chat template;
- messages: every assistant turn (TRL's `assistant_only_loss`);
- text: every token (there is no prompt).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bds.data.schema import SOURCE_LABELS, LoadedSource, Record
from bds.errors import BDSInputError
from bds.textio import check_text

# Column names tried, in order, for each record field that `fields` does not map.
DEFAULT_COLUMNS = {
    "id": ("id",),
    "instruction": ("instruction", "prompt", "question"),
    "input": ("input", "context"),
    "response": ("response", "output", "answer", "completion"),
    "source": ("source", "label_source"),
    "messages": ("messages",),
    "text": ("text",),
}
Layout = Literal["messages", "prompt-completion", "text"]
FORMATS_NAMED = (
    "`messages` (a list of {role, content} messages), `prompt` + `completion` (strings or "
    "message lists; or instruction + response) or `text`"
)


@dataclass(frozen=True)
class RowLayout:
    """Which format a source is in and the column behind each record field (None: absent)."""

    layout: Layout
    columns: dict[str, str | None]
    prompts_only: bool


def resolve_layout(
    where: str, mapping: Mapping[str, str], first: Mapping[str, Any], prompts_only: bool = False
) -> RowLayout:
    """The source's layout from its first row's columns; mapped columns must exist.

    prompts_only: the caller reads prompts only (evaluation), so no completion is needed."""
    columns: dict[str, str | None] = {}
    for fld, candidates in DEFAULT_COLUMNS.items():
        if fld in mapping:
            if mapping[fld] not in first:
                raise BDSInputError(
                    f"{where}: `fields` maps {fld!r} to column {mapping[fld]!r}, which the data "
                    f"does not have (columns: {', '.join(map(str, first))}); fix the mapping"
                )
            columns[fld] = mapping[fld]
        else:
            columns[fld] = next((c for c in candidates if c in first), None)
    mapped_pair = "instruction" in mapping or "response" in mapping
    if columns["messages"] and not mapped_pair:
        return RowLayout("messages", columns, prompts_only)
    pair_columns = columns["instruction"] or columns["response"]
    if mapped_pair or (pair_columns and "text" not in mapping) or not columns["text"]:
        for fld in ("instruction",) if prompts_only else ("instruction", "response"):
            if columns[fld] is None:
                raise BDSInputError(
                    f"{where}: no column for record field {fld!r} (looked for "
                    f"{', '.join(DEFAULT_COLUMNS[fld])}); map one with `fields: {{{fld}: COLUMN}}`"
                    f", or give the data as {FORMATS_NAMED}"
                )
        return RowLayout("prompt-completion", columns, prompts_only)
    if prompts_only:
        raise BDSInputError(
            f"{where}: a text (language-modelling) source has no prompts to evaluate; give "
            "a `prompt` (or instruction) column"
        )
    return RowLayout("text", columns, prompts_only)


def records_from_rows(
    rows: Iterable[tuple[str, Mapping[str, Any]]],
    name: str,
    id_prefix: str,
    fields: Mapping[str, str] | None = None,
    label: str | None = None,
    prompts_only: bool = False,
) -> LoadedSource:
    """Records of (location, row) pairs; the location (file:line) names a bad row.

    Ids: the `id` column where given, else `<id_prefix>/<row index>` (stable across runs).
    Every record's source: its `source` column, else `label`, else unknown."""
    records: list[Record] = []
    ids: set[str] = set()
    layout: RowLayout | None = None
    for index, (where, row) in enumerate(rows):
        if layout is None:
            layout = resolve_layout(name, fields or {}, row, prompts_only)
        check_text(row, where)
        record = row_to_record(row, where, layout, f"{id_prefix}/{index}", label)
        if record.id in ids:
            raise BDSInputError(
                f"{where}: duplicate id {record.id!r}; ids must be unique within a file"
            )
        ids.add(record.id)
        records.append(record)
    if not records:
        raise BDSInputError(f"{name}: holds no records; give a file with at least one sample")
    return LoadedSource(name, records)


def row_to_record(
    row: Mapping[str, Any], where: str, layout: RowLayout, default_id: str, label: str | None
) -> Record:
    """One row as a record, in the source's layout; BDSInputError names `where` and the field."""
    cols = layout.columns
    rid = _scalar(row, cols["id"], where, "id") or default_id
    source = _scalar(row, cols["source"], where, "source") or label or "unknown"
    if source not in SOURCE_LABELS:
        raise BDSInputError(f"{where}: source {source!r} is not one of {', '.join(SOURCE_LABELS)}")
    common = {"id": rid, "source": source}
    if layout.layout == "text":
        text = _required(row, cols["text"], where, "text")
        return Record(instruction="", response=text, form="text", **common)
    if layout.layout == "messages":
        value = _value(row, cols["messages"])
        if value is None:
            raise BDSInputError(
                f"{where}: missing field {cols['messages']!r}; the source is in the messages "
                "format (set by its first row), so every row needs its conversation"
            )
        messages = _messages(value, where, cols["messages"])
        trained = tuple(i for i, m in enumerate(messages) if m["role"] == "assistant")
        if not trained and not layout.prompts_only:
            raise BDSInputError(
                f"{where}: {cols['messages']!r} has no assistant turn to learn from; add the "
                "assistant's answer"
            )
        return _conversation(messages, trained, common)
    prompt = _decoded(_value(row, cols["instruction"]), where, cols["instruction"])
    completion = _decoded(_value(row, cols["response"]), where, cols["response"])
    if isinstance(prompt, list) or isinstance(completion, list):
        return _conversational_pair(row, where, layout, prompt, completion, common)
    instruction = _required(row, cols["instruction"], where, "instruction")
    response = (
        _scalar(row, cols["response"], where, "response")
        if layout.prompts_only
        else _required(row, cols["response"], where, "response")
    )
    return Record(
        instruction=instruction,
        input=_scalar(row, cols["input"], where, "input"),
        response=response,
        **common,
    )


# Text that is a message list written out (a CSV cell: JSON, or Python's str() of a list).
_ENCODED_MESSAGES = re.compile(r"""^\s*\[\s*\{\s*['"](role|content)['"]\s*:""")


def _decoded(value: Any, where: str, column: str | None) -> Any:
    """A prompt or completion cell holding a message list as text, as that list (JSON);
    a Python repr of one is refused rather than learned as text."""
    if not isinstance(value, str) or not _ENCODED_MESSAGES.match(value):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise BDSInputError(
            f"{where}: {column!r} holds a message list written as Python text (str() of a "
            "list), which is not JSON; write it with json.dumps, or save the data as JSONL or "
            "Parquet"
        ) from None


def _conversational_pair(
    row: Mapping[str, Any],
    where: str,
    layout: RowLayout,
    prompt: Any,
    completion: Any,
    common: dict[str, str],
) -> Record:
    """A prompt-completion row whose values are message lists: the completion is learned."""
    cols = layout.columns
    for fld, value in (("instruction", prompt), ("response", completion)):
        if value is None and (fld == "instruction" or not layout.prompts_only):
            raise _missing(where, cols[fld], fld)
        if value is not None and not isinstance(value, list):
            other = cols["response" if fld == "instruction" else "instruction"]
            raise BDSInputError(
                f"{where}: {cols[fld]!r} is {_kind(value)} but {other!r} is a list of messages; "
                "give both as strings or both as lists of {role, content} messages"
            )
    if _scalar(row, cols["input"], where, "input"):
        raise BDSInputError(
            f"{where}: {cols['input']!r} has no place in a conversation; put it in the prompt's "
            "messages"
        )
    prompt_messages = _messages(prompt, where, cols["instruction"])
    completion_messages = _messages(completion or [], where, cols["response"], allow_empty=True)
    if not completion_messages and not layout.prompts_only:
        raise BDSInputError(f"{where}: {cols['response']!r} is an empty list; give the answer")
    start = len(prompt_messages)
    trained = tuple(range(start, start + len(completion_messages)))
    return _conversation(prompt_messages + completion_messages, trained, common)


def _conversation(
    messages: tuple[dict[str, Any], ...], trained: tuple[int, ...], common: dict[str, str]
) -> Record:
    """A conversation record; instruction / response summarise it (the last turn before the
    first learned one, and the learned turns) for previews, the encoder and judges."""
    first = trained[0] if trained else len(messages)
    asked = [m["content"] for m in messages[:first] if m["role"] != "assistant"]
    return Record(
        instruction=asked[-1] if asked else "",
        response="\n\n".join(messages[i]["content"] for i in trained),
        form="conversation",
        messages=messages,
        trained=trained,
        **common,
    )


def _messages(
    value: Any, where: str, column: str | None, allow_empty: bool = False
) -> tuple[dict[str, Any], ...]:
    """A checked list of {"role": str, "content": str} messages (other non-null keys kept).

    A string is read as JSON (a CSV cell can only hold a message list as text)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            python = " (Python's str() of a list is not JSON: write it with json.dumps)"
            raise BDSInputError(
                f"{where}: {column!r} is text, not a JSON list of messages"
                f"{python if _ENCODED_MESSAGES.match(value) else ''}; give a list of "
                '{"role": ..., "content": ...} objects'
            ) from None
    if not isinstance(value, list) or (not value and not allow_empty):
        raise BDSInputError(
            f"{where}: {column!r} must be a non-empty list of {{role, content}} messages, "
            f"got {_kind(value)}"
        )
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise BDSInputError(
                f"{where}: {column!r} message {i} is {_kind(message)}, not a {{role, content}} "
                "object"
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise BDSInputError(
                f"{where}: {column!r} message {i} has no `role` (system, user or assistant); "
                "add one"
            )
        if not isinstance(content, str):
            raise BDSInputError(
                f"{where}: {column!r} message {i} has {_kind(content)} as `content`; give the "
                "message's text as a string"
            )
        out.append({k: v for k, v in message.items() if v is not None})
    return tuple(out)


def _value(row: Mapping[str, Any], column: str | None) -> Any:
    value = row.get(column) if column else None
    return None if _is_blank(value) else value


def _scalar(row: Mapping[str, Any], column: str | None, where: str, fld: str) -> str:
    """A text field's value ("" when absent or blank); a list or mapping is refused."""
    value = _value(row, column)
    if value is None:
        return ""
    if isinstance(value, list | dict | tuple):
        raise BDSInputError(
            f"{where}: {column!r} (record field {fld!r}) is {_kind(value)}, not text; give a "
            "string (a conversation goes in `messages`, or in `prompt` + `completion` as "
            "message lists)"
        )
    return str(value)


def _required(row: Mapping[str, Any], column: str | None, where: str, fld: str) -> str:
    text = _scalar(row, column, where, fld)
    if not text:
        raise _missing(where, column, fld)
    return text


def _missing(where: str, column: str | None, fld: str) -> BDSInputError:
    return BDSInputError(
        f"{where}: missing field {column!r} (record field {fld!r}); add it or map another "
        f"column with `fields: {{{fld}: COLUMN}}`"
    )


def _is_blank(value: Any) -> bool:
    """None, NaN (pandas' empty cell) or whitespace-only text."""
    if value is None:
        return True
    if isinstance(value, float) and value != value:
        return True
    return isinstance(value, str) and not value.strip()


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, Mapping):
        return "an object"
    if value is None:
        return "empty"
    return f"{type(value).__name__} {str(value)[:40]!r}"


def records_from_dataset(
    dataset: Iterable[Mapping[str, Any]],
    name: str = "dataset",
    fields: Mapping[str, str] | None = None,
    label: str | None = None,
    prompts_only: bool = False,
) -> LoadedSource:
    """Records of a `datasets.Dataset` (or any iterable of row dicts) in a TRL format.

    Rows are named `<name>: row <i>` (from 1) in messages; ids default to `<name>/<i>`."""
    rows = ((f"{name}: row {i + 1}", row) for i, row in enumerate(dataset))
    return records_from_rows(rows, name, name, fields, label, prompts_only)
