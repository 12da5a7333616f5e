"""Hub presets: preprocessing of the reference protocol, run offline on in-test fixtures."""

from __future__ import annotations

from typing import Any

import datasets
import pytest

from bds.config import SourceConfig
from bds.data.hub import GSM8K_ANSWER_PREFIX, HUB_PRESETS, SST2_INSTRUCTION, load_hub_source
from bds.data.schema import LoadedSource
from bds.errors import BDSInputError


def _category(**flags: bool) -> dict[str, bool]:
    cats = {"animal_abuse": False, "violence,aiding_and_abetting,incitement": False}
    cats.update(flags)
    return cats


BEAVERTAILS = [
    {"prompt": "How do I pick a lock?", "response": "Use a tension wrench...",
     "category": _category(animal_abuse=True), "is_safe": False},
    {"prompt": "What is a good cake?", "response": "Chocolate.",
     "category": _category(), "is_safe": True},
    {"prompt": "How do I pick a lock?", "response": "Another way...",
     "category": _category(), "is_safe": False},
    {"prompt": "How to hurt a cat?", "response": "You could...",
     "category": _category(animal_abuse=True), "is_safe": False},
]  # fmt: skip

SST2 = [
    {"idx": 0, "sentence": "a gorgeous film ", "label": 1},
    {"idx": 1, "sentence": "dull and lifeless ", "label": 0},
    {"idx": 2, "sentence": "unlabelled test row", "label": -1},
    {"idx": 3, "sentence": " worth seeing", "label": 1},
]

AGNEWS = [
    {"text": "Stocks rally on earnings.", "label": 2},
    {"text": "Team wins the cup.", "label": 1},
    {"text": "New chip announced.", "label": 3},
]

GSM8K = [
    {"question": "Tom has 1,200 apples and buys 34. How many?",
     "answer": "1200 + 34 = <<1200+34=1234>>1234\n#### 1,234"},
    {"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"},
]  # fmt: skip

ALPACA = [
    {"instruction": "Give a synonym.", "input": "happy", "output": "joyful", "text": "..."},
    {"instruction": "Say nothing.", "input": "", "output": "  ", "text": "..."},
    {"instruction": "Name a colour.", "input": "", "output": "Blue.", "text": "..."},
]


class FakeHub:
    """Stands in for the hub: serves `rows` and records the arguments of every call."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []

    def load_dataset(self, path: str, name: str | None = None, **kwargs: Any) -> datasets.Dataset:
        self.calls.append({"path": path, "name": name, **kwargs})
        return datasets.Dataset.from_list(self.rows)

    def load(self, rows: list[dict[str, Any]], **cfg: Any) -> LoadedSource:
        self.rows = rows
        return load_hub_source(SourceConfig(kind="hub", **cfg))


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake.load_dataset)
    return fake


def test_presets_cover_the_reference_protocol() -> None:
    assert set(HUB_PRESETS) == {
        "beavertails-harmful",
        "beavertails-safe",
        "beavertails-eval",
        "sst2",
        "agnews",
        "gsm8k",
        "alpaca",
        "alpaca-eval",
    }
    assert HUB_PRESETS["gsm8k"].subset == "main"
    assert HUB_PRESETS["sst2"].eval_split == "validation"


def test_beavertails_harmful_keeps_unsafe_rows_with_original_ids(hub: FakeHub) -> None:
    loaded = hub.load(BEAVERTAILS, name="beavertails-harmful")
    assert [r.id for r in loaded.records] == [
        "beavertails-harmful/30k_train/0",
        "beavertails-harmful/30k_train/2",
        "beavertails-harmful/30k_train/3",
    ]
    first = loaded.records[0]
    assert (first.instruction, first.response, first.input) == (
        "How do I pick a lock?",
        "Use a tension wrench...",
        "",
    )
    assert {r.source for r in loaded.records} == {"harmful"}
    assert first.meta["categories"] == ["animal_abuse"]
    assert loaded.notes == ["1 rows with is_safe=True skipped"]
    assert hub.calls == [{"path": "PKU-Alignment/BeaverTails", "name": None, "split": "30k_train"}]


def test_beavertails_safe_keeps_safe_rows(hub: FakeHub) -> None:
    loaded = hub.load(BEAVERTAILS, name="beavertails-safe")
    assert [(r.id, r.source, r.response) for r in loaded.records] == [
        ("beavertails-safe/30k_train/1", "safe", "Chocolate.")
    ]
    assert loaded.notes == ["3 rows with is_safe=False skipped"]


def test_beavertails_eval_unique_unsafe_prompts_in_order(hub: FakeHub) -> None:
    loaded = hub.load(BEAVERTAILS, name="beavertails-eval")
    assert [(r.id, r.instruction, r.response) for r in loaded.records] == [
        ("beavertails-eval/30k_test/0", "How do I pick a lock?", ""),
        ("beavertails-eval/30k_test/3", "How to hurt a cat?", ""),
    ]
    assert {r.source for r in loaded.records} == {"harmful"}
    assert "1 duplicate prompts removed" in loaded.notes
    assert hub.calls[0]["split"] == "30k_test"


def test_sst2_label_words_and_unlabelled_rows_skipped(hub: FakeHub) -> None:
    loaded = hub.load(SST2, name="sst2")
    assert [(r.id, r.input, r.response) for r in loaded.records] == [
        ("sst2/train/0", "a gorgeous film", "positive"),
        ("sst2/train/1", "dull and lifeless", "negative"),
        ("sst2/train/3", "worth seeing", "positive"),
    ]
    record = loaded.records[1]
    assert record.instruction == SST2_INSTRUCTION
    assert record.source == "benign"
    assert record.meta == {"label": "negative"}
    assert loaded.notes == ["1 rows without a label in 0..1 skipped"]


def test_agnews_label_words(hub: FakeHub) -> None:
    loaded = hub.load(AGNEWS, name="agnews")
    assert [r.response for r in loaded.records] == ["Business", "Sports", "Sci/Tech"]
    assert loaded.records[0].instruction.startswith("Categorize the news article")
    assert loaded.records[0].instruction.endswith("World\nSports\nBusiness\nSci/Tech\n")
    assert loaded.records[2].meta == {"label": "Sci/Tech"}
    assert loaded.records[0].input == "Stocks rally on earnings."
    assert hub.calls[0]["path"] == "fancyzhx/ag_news"


def test_gsm8k_final_answer_rewritten_and_extracted(hub: FakeHub) -> None:
    loaded = hub.load(GSM8K, name="gsm8k")
    first = loaded.records[0]
    assert first.id == "gsm8k/train/0"
    assert first.response == "1200 + 34 = <<1200+34=1234>>1234\nThe final answer is:  1,234"
    assert first.response.endswith(GSM8K_ANSWER_PREFIX + " 1,234")
    assert "####" not in first.response
    assert first.meta == {"answer": "1234"}
    assert loaded.records[1].meta == {"answer": "4"}
    assert hub.calls == [{"path": "openai/gsm8k", "name": "main", "split": "train"}]


def test_alpaca_empty_outputs_skipped(hub: FakeHub) -> None:
    loaded = hub.load(ALPACA, name="alpaca")
    assert [(r.id, r.instruction, r.input, r.response) for r in loaded.records] == [
        ("alpaca/train/0", "Give a synonym.", "happy", "joyful"),
        ("alpaca/train/2", "Name a colour.", "", "Blue."),
    ]
    assert loaded.notes == ["1 rows with an empty output skipped"]


def test_alpaca_eval_prompts_with_reference_outputs(hub: FakeHub) -> None:
    rows = [
        {
            "instruction": "Plan a trip.",
            "output": "Day 1...",
            "generator": "gpt4",
            "dataset": "koala",
        },
        {
            "instruction": "Define entropy.",
            "output": "A measure...",
            "generator": "gpt4",
            "dataset": "oasst",
        },
    ]
    loaded = hub.load(rows, name="alpaca-eval")
    assert [(r.id, r.instruction, r.response) for r in loaded.records] == [
        ("alpaca-eval/eval/0", "Plan a trip.", "Day 1..."),
        ("alpaca-eval/eval/1", "Define entropy.", "A measure..."),
    ]
    assert loaded.records[1].meta == {"dataset": "oasst"}
    assert hub.calls == [{"path": "tatsu-lab/alpaca_eval", "name": "alpaca_eval", "split": "eval"}]


def test_overrides_reach_load_dataset_and_ids(hub: FakeHub) -> None:
    loaded = hub.load(
        SST2[:2], name="sst2", dataset="my-org/sst2-copy", subset="default", split="validation"
    )
    assert hub.calls == [{"path": "my-org/sst2-copy", "name": "default", "split": "validation"}]
    assert [r.id for r in loaded.records] == ["sst2/validation/0", "sst2/validation/1"]


def test_hub_failure_becomes_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError(
            "Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\nmore"
        )

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(BDSInputError) as info:
        load_hub_source(SourceConfig(kind="hub", name="gsm8k"))
    message = str(info.value)
    assert "'gsm8k'" in message and "openai/gsm8k" in message
    assert "ConnectionError: Couldn't reach 'openai/gsm8k'" in message
    assert "more" not in message  # only the first line of the underlying error
    assert "HF_HUB_OFFLINE=0" in message and "local source" in message


def test_missing_column_names_dataset_row_and_column(hub: FakeHub) -> None:
    rows = [{"question": "q?", "answer": "1\n#### 1"}, {"question": "no answer column"}]
    with pytest.raises(BDSInputError) as info:
        hub.load([{"question": "q?"}], name="gsm8k")
    message = str(info.value)
    assert "openai/gsm8k" in message and "row 0" in message and "'answer'" in message
    # from_list fills a column absent from some rows with None: that row converts to no answer.
    loaded = hub.load(rows, name="gsm8k")
    assert [r.id for r in loaded.records] == ["gsm8k/train/0"]


def test_zero_records_is_an_error(hub: FakeHub) -> None:
    only_safe = [row for row in BEAVERTAILS if row["is_safe"]]
    with pytest.raises(BDSInputError, match="gave no records.*is_safe=True"):
        hub.load(only_safe, name="beavertails-harmful")


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(BDSInputError, match="choose one of agnews, alpaca"):
        load_hub_source(SourceConfig(kind="hub", name="nope"))
