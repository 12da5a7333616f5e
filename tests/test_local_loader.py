"""Local files (JSON, JSONL, CSV, Parquet) through `load_source(SourceConfig(kind="local"))`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bds.config import SourceConfig
from bds.data.schema import LoadedSource
from bds.data.sources import load_source
from bds.errors import BDSInputError

ROWS = [
    {"instruction": "Name a colour.", "input": "", "response": "Blue."},
    {"instruction": "Give a synonym.", "input": "happy", "response": "joyful"},
    {"instruction": "Add the numbers.", "input": "2, 3", "response": "5"},
]


def load(path: Path | str, **kwargs: Any) -> LoadedSource:
    return load_source(SourceConfig(kind="local", path=str(path), **kwargs))


def as_tuples(loaded: LoadedSource) -> list[tuple[str, str, str, str, str]]:
    return [(r.id, r.instruction, r.input, r.response, r.source) for r in loaded.records]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_json(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return path


def write_json_wrapped(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"data": rows, "version": 1}), encoding="utf-8")
    return path


def raises_naming(*fragments: str):
    """pytest.raises(BDSInputError) whose message contains every fragment, in order."""
    return pytest.raises(BDSInputError, match=".*".join(re.escape(f) for f in fragments))


# ---------------------------------------------------------------- formats ---------------


@pytest.mark.parametrize(
    "filename,writer",
    [
        ("data.json", write_json),
        ("data.json", write_json_wrapped),
        ("data.jsonl", write_jsonl),
        ("data.csv", write_csv),
        ("data.parquet", write_parquet),
    ],
    ids=["json-list", "json-data-key", "jsonl", "csv", "parquet"],
)
def test_every_format_gives_the_same_records(tmp_path, filename, writer):
    path = writer(tmp_path / filename, ROWS)
    loaded = load(path, label="benign")
    assert loaded.name == filename
    assert loaded.notes == []
    assert as_tuples(loaded) == [
        ("data/0", "Name a colour.", "", "Blue.", "benign"),
        ("data/1", "Give a synonym.", "happy", "joyful", "benign"),
        ("data/2", "Add the numbers.", "2, 3", "5", "benign"),
    ]


def test_jsonl_skips_blank_lines(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text(
        '{"instruction": "a", "response": "1"}\n\n   \n{"instruction": "b", "response": "2"}\n',
        encoding="utf-8",
    )
    assert [(r.instruction, r.response) for r in load(path).records] == [("a", "1"), ("b", "2")]


def test_csv_quoted_field_may_span_lines(tmp_path):
    path = tmp_path / "multi.csv"
    path.write_text(
        "instruction,response\n"
        '"Write a poem\nin two lines, please.","Roses are red,\nviolets blue."\n'
        "Say hi.,Hi!\n",
        encoding="utf-8",
    )
    records = load(path).records
    assert len(records) == 2
    assert records[0].instruction == "Write a poem\nin two lines, please."
    assert records[0].response == "Roses are red,\nviolets blue."
    assert (records[1].instruction, records[1].response) == ("Say hi.", "Hi!")


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = write_jsonl(tmp_path / "records.txt", ROWS[:1])
    assert load(path, format="jsonl").records[0].response == "Blue."


def test_relative_path_starts_at_base_dir(tmp_path):
    write_jsonl(tmp_path / "rel.jsonl", ROWS)
    loaded = load_source(SourceConfig(kind="local", path="rel.jsonl"), base_dir=tmp_path)
    assert len(loaded.records) == 3


# ---------------------------------------------------------------- columns ---------------


def test_alias_columns_prompt_and_output(tmp_path):
    path = write_jsonl(tmp_path / "alias.jsonl", [{"prompt": "Hello?", "output": "Hi."}])
    record = load(path).records[0]
    assert (record.instruction, record.input, record.response) == ("Hello?", "", "Hi.")


def test_input_column_is_optional(tmp_path):
    path = write_jsonl(tmp_path / "noinput.jsonl", [{"instruction": "Q", "response": "A"}])
    assert load(path).records[0].input == ""


def test_fields_mapping_picks_named_columns(tmp_path):
    rows = [
        {"q": "What is 2+2?", "ctx": "arithmetic", "a": "4", "instruction": "decoy", "key": "k1"},
        {"q": "Capital of France?", "ctx": "", "a": "Paris", "instruction": "decoy", "key": "k2"},
    ]
    path = write_jsonl(tmp_path / "mapped.jsonl", rows)
    loaded = load(path, fields={"instruction": "q", "input": "ctx", "response": "a", "id": "key"})
    assert as_tuples(loaded) == [
        ("k1", "What is 2+2?", "arithmetic", "4", "unknown"),
        ("k2", "Capital of France?", "", "Paris", "unknown"),
    ]


def test_label_applies_when_there_is_no_source_column(tmp_path):
    path = write_jsonl(tmp_path / "nolabel.jsonl", ROWS)
    assert {r.source for r in load(path, label="harmful").records} == {"harmful"}
    assert {r.source for r in load(path).records} == {"unknown"}


def test_source_column_wins_and_empty_cells_fall_back_to_label(tmp_path):
    rows = [
        {"instruction": "a", "response": "1", "source": "harmful"},
        {"instruction": "b", "response": "2", "source": "safe"},
        {"instruction": "c", "response": "3", "source": ""},
    ]
    path = write_jsonl(tmp_path / "labelled.jsonl", rows)
    assert [r.source for r in load(path, label="benign").records] == ["harmful", "safe", "benign"]


def test_generated_ids_are_stable_and_explicit_ids_kept(tmp_path):
    path = write_jsonl(tmp_path / "stable.jsonl", ROWS)
    first, second = load(path), load(path)
    assert [r.id for r in first.records] == ["stable/0", "stable/1", "stable/2"]
    assert [r.id for r in second.records] == [r.id for r in first.records]

    with_ids = write_jsonl(tmp_path / "ids.jsonl", [{"id": 7, **ROWS[0]}, {"id": "x-1", **ROWS[1]}])
    assert [r.id for r in load(with_ids).records] == ["7", "x-1"]


def test_limit_keeps_the_first_records_and_says_so(tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", ROWS)
    loaded = load(path, limit=2)
    assert [r.id for r in loaded.records] == ["many/0", "many/1"]
    assert loaded.notes == ["kept the first 2 of 3 records (limit)"]

    roomy = load(path, limit=10)
    assert len(roomy.records) == 3
    assert roomy.notes == []


# ---------------------------------------------------------------- errors ----------------


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.jsonl"
    with raises_naming(str(path), "no such data file"):
        load(path)


def test_malformed_jsonl_line_reports_its_line_number(tmp_path):
    path = tmp_path / "broken.jsonl"
    # Line 2 is blank: it must still count towards the line number.
    path.write_text(
        '{"instruction": "a", "response": "1"}\n\n{"instruction": "b", "response": \n'
        '{"instruction": "c", "response": "3"}\n',
        encoding="utf-8",
    )
    with raises_naming(f"{path}:3:", "malformed JSON") as excinfo:
        load(path)
    assert f"{path}:4" not in str(excinfo.value)


def test_jsonl_line_that_is_a_list(tmp_path):
    path = write_jsonl(tmp_path / "listline.jsonl", [ROWS[0], ["Q", "A"]])
    with raises_naming(f"{path}:2:", "expected a JSON object", "list"):
        load(path)


def test_missing_required_field_in_one_row(tmp_path):
    rows = [ROWS[0], ROWS[1], {"instruction": "no answer here"}]
    path = write_jsonl(tmp_path / "partial.jsonl", rows)
    with raises_naming(f"{path}:3:", "missing field 'response'"):
        load(path)


def test_missing_required_field_in_parquet_row(tmp_path):
    rows = [ROWS[0], {"instruction": "Q", "input": "", "response": None}]
    path = write_parquet(tmp_path / "holes.parquet", rows)
    with raises_naming(str(path), "row", "missing field 'response'"):
        load(path)


def test_no_column_for_a_required_field(tmp_path):
    path = write_jsonl(tmp_path / "nocol.jsonl", [{"instruction": "Q", "text": "A"}])
    with raises_naming(str(path), "no column for record field 'response'", "fields:"):
        load(path)


def test_mapped_column_absent(tmp_path):
    path = write_jsonl(tmp_path / "mapped.jsonl", ROWS)
    with raises_naming(str(path), "'answer_text'"):
        load(path, fields={"response": "answer_text"})


def test_mapped_optional_column_absent(tmp_path):
    path = write_jsonl(tmp_path / "mapped.jsonl", ROWS)
    with raises_naming(str(path), "'contxt'"):
        load(path, fields={"input": "contxt"})


def test_empty_required_csv_cell(tmp_path):
    path = tmp_path / "blank.csv"
    path.write_text("instruction,response\nQ1,A1\nQ2,\n", encoding="utf-8")
    with raises_naming(str(path), "row 2", "'response'"):
        load(path)


@pytest.mark.parametrize(
    "filename,content",
    [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n  \n"),
        ("empty.csv", ""),
        ("header-only.csv", "instruction,response\n"),
        ("empty-list.json", "[]"),
    ],
)
def test_empty_file(tmp_path, filename, content):
    path = tmp_path / filename
    path.write_text(content, encoding="utf-8")
    with raises_naming(str(path), "holds no records"):
        load(path)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "records.txt"
    path.write_text('{"instruction": "Q", "response": "A"}\n', encoding="utf-8")
    with raises_naming(str(path), "'.txt'", "format"):
        load(path)


def test_invalid_source_label(tmp_path):
    rows = [{**ROWS[0], "source": "benign"}, {**ROWS[1], "source": "evil"}]
    path = write_jsonl(tmp_path / "labels.jsonl", rows)
    with raises_naming(f"{path}:2:", "source 'evil'", "benign, harmful, safe, unknown"):
        load(path)


def test_duplicate_ids(tmp_path):
    rows = [{"id": "a", **ROWS[0]}, {"id": "b", **ROWS[1]}, {"id": "a", **ROWS[2]}]
    path = write_jsonl(tmp_path / "dupes.jsonl", rows)
    with raises_naming(f"{path}:3:", "duplicate id 'a'"):
        load(path)


def test_malformed_json_file_reports_its_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"instruction": "Q", "response": "A"},\n  {oops}\n]\n', encoding="utf-8")
    with raises_naming(f"{path}:3:", "malformed JSON"):
        load(path)


def test_json_item_that_is_not_an_object(tmp_path):
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([ROWS[0], "just text"]), encoding="utf-8")
    with raises_naming(str(path), "item 1", "str"):
        load(path)


def test_json_that_is_not_a_list(tmp_path):
    path = tmp_path / "scalar.json"
    path.write_text('{"data": 5}', encoding="utf-8")
    with raises_naming(str(path), "expected a JSON list"):
        load(path)


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"this is not parquet")
    with raises_naming(str(path), "not a readable Parquet file"):
        load(path)
