"""Fine-tune accuracy parsers: label words, GSM8K numbers, alpaca_eval export."""

from __future__ import annotations

import pytest

from bds.config import SourceConfig
from bds.data.hub import AGNEWS_LABELS, SST2_LABELS
from bds.data.schema import Record
from bds.eval.metrics import (
    alpaca_eval_rows,
    infer_metric,
    label_correct,
    numbers_equal,
    parse_number,
    score_answer,
)


@pytest.mark.parametrize(
    ("answer", "label", "ok"),
    [
        ("positive", "positive", True),
        ("  positive.\n", "positive", True),
        ("Positive", "positive", True),  # the reference lets the first letter's case vary
        ("POSITIVE", "positive", False),
        ("positive\n### Instruction: more text", "positive", True),  # cut at the first line
        ("The sentiment is positive", "positive", False),  # exact match, not containment
        ("negative", "positive", False),
        ("Sci/Tech", "Sci/Tech", True),
        ("sci/tech", "Sci/Tech", True),
        ("World news", "World", False),
        ("", "World", False),
    ],
)
def test_label_exact_match(answer, label, ok):
    assert label_correct(answer, label) is ok


def test_reference_label_words_are_the_hub_constants():
    assert SST2_LABELS == ("negative", "positive")
    assert AGNEWS_LABELS == ("World", "Sports", "Business", "Sci/Tech")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("She pays 3 + 4 = 7 dollars.\nThe final answer is: 18", 18.0),
        ("The final answer is: 1,234", 1234.0),
        ("The final answer is:$42.50 and 7 more", 42.5),
        ("so 5 apples then 12 pears", 12.0),  # no marker: the last number
        ("It is -3.", -3.0),
        ("no digits here", None),
    ],
)
def test_gsm8k_number(text, value):
    assert parse_number(text) == value


def test_numbers_compare_as_numbers():
    assert numbers_equal(parse_number("The final answer is: 42.0"), parse_number("42"))
    assert not numbers_equal(None, 42.0)


def test_score_answer_uses_the_record_meta():
    sst = Record("s/1", "Analyze", "negative", input="bad film", meta={"label": "negative"})
    assert score_answer("negative", sst, "label")["correct"] is True
    gsm = Record("g/1", "Q?", "... The final answer is: 72", meta={"answer": "72"})
    scored = score_answer("Half of 144 is 72. The final answer is: 72", gsm, "number")
    assert scored == {"reference": "72", "parsed": 72.0, "correct": True}
    assert score_answer("x", gsm, "alpaca-eval")["correct"] is None


def test_infer_metric():
    assert infer_metric(SourceConfig(kind="hub", name="sst2")) == "label"
    assert infer_metric(SourceConfig(kind="hub", name="gsm8k")) == "number"
    assert infer_metric(SourceConfig(kind="hub", name="alpaca")) == "alpaca-eval"
    assert infer_metric(SourceConfig(kind="embedded", name="sentiment-test")) == "label"
    with pytest.raises(ValueError, match="set metric to label, number or alpaca-eval"):
        infer_metric(SourceConfig(kind="local", path="x.jsonl"))


def test_alpaca_eval_rows_format():
    records = [Record("a/1", "Write a poem", "", input="about cats"), Record("a/2", "Hi", "")]
    rows = alpaca_eval_rows(records, ["meow", "hello"], "smollm2+lora")
    assert rows[0] == {
        "instruction": "Write a poem\n\nabout cats",
        "output": "meow",
        "generator": "smollm2+lora",
        "id": "a/1",
    }
    assert rows[1]["instruction"] == "Hi"
