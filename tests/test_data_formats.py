"""Every TRL dataset format, from files, a `datasets.Dataset` and a hub dataset id: the
records they give, how they are tokenised (what is learned, what is masked), and the one
sentence each malformed row ends in."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bds.config import SourceConfig, from_dict
from bds.data.formats import records_from_dataset
from bds.data.sources import load_source
from bds.data.templates import render_prompt
from bds.data.tokenize import IGNORE_INDEX, tokenize_records
from bds.errors import BDSInputError

USER = {"role": "user", "content": "What is the capital of France?"}
ANSWER = {"role": "assistant", "content": "Paris."}
SYSTEM = {"role": "system", "content": "Answer briefly."}
ROWS = {
    "instruction": [{"instruction": "What is the capital of France?", "response": "Paris."}],
    "prompt-completion": [{"prompt": "What is the capital of France?", "completion": "Paris."}],
    "conversational-prompt-completion": [{"prompt": [SYSTEM, USER], "completion": [ANSWER]}],
    "messages": [{"messages": [SYSTEM, USER, ANSWER]}],
    "text": [{"text": "The capital of France is Paris."}],
}

CHAT_PAIR = ROWS["conversational-prompt-completion"][0]
CHAT = ROWS["messages"][0]


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def load(path: Path, **kwargs: Any):
    return load_source(SourceConfig(kind="local", path=str(path), **kwargs))


def learned_and_masked(sample, tokenizer) -> tuple[str, str]:
    learned = [
        t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label != IGNORE_INDEX
    ]
    masked = [
        t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label == IGNORE_INDEX
    ]
    return tokenizer.decode(learned), tokenizer.decode(masked)


def raises_naming(*fragments: str):
    return pytest.raises(BDSInputError, match=".*".join(re.escape(f) for f in fragments))


# ---------------------------------------------------------------- what each format gives --


@pytest.mark.parametrize("name", list(ROWS))
def test_each_format_learns_only_its_answer(tmp_path, tiny_tokenizer, name):
    (record,) = load(write_jsonl(tmp_path / f"{name}.jsonl", ROWS[name])).records
    (sample,), report = tokenize_records([record], tiny_tokenizer, "alpaca", 512)
    assert report.kept == 1
    learned, masked = learned_and_masked(sample, tiny_tokenizer)
    bos = tiny_tokenizer.decode(tiny_tokenizer("")["input_ids"])  # what the tokenizer adds
    if name == "text":
        assert record.form == "text"
        assert learned == "The capital of France is Paris.</s>"  # all of it, then EOS
        assert masked == bos  # a BOS, if any, predicts nothing
    elif name in ("instruction", "prompt-completion"):  # strings: data.template renders them
        assert record.form == "instruction"
        assert learned == "Paris.</s>"
        assert "### Instruction:\nWhat is the capital of France?" in masked
    else:  # conversational: the chat template renders them, whatever data.template says
        assert record.form == "conversation"
        assert record.messages == (SYSTEM, USER, ANSWER)
        assert (record.instruction, record.response) == (USER["content"], "Paris.")
        assert learned == "Paris.<|im_end|>\n"
        assert masked == bos + (
            "<|im_start|>system\nAnswer briefly.<|im_end|>\n<|im_start|>user\n"
            "What is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        )
        # never the Python repr of the message list
        assert "{'role'" not in record.instruction + record.response


def test_messages_learn_every_assistant_turn_and_no_user_turn(tmp_path, tiny_tokenizer):
    turns = [
        {"role": "user", "content": "Say one."},
        {"role": "assistant", "content": "one"},
        {"role": "user", "content": "Say two."},
        {"role": "assistant", "content": "two"},
        {"role": "user", "content": "Thanks."},
    ]
    (record,) = load(write_jsonl(tmp_path / "multi.jsonl", [{"messages": turns}])).records
    assert record.trained == (1, 3)
    (sample,), _ = tokenize_records([record], tiny_tokenizer, "chat", 512)
    learned, masked = learned_and_masked(sample, tiny_tokenizer)
    assert learned == "one<|im_end|>\ntwo<|im_end|>\n"
    for text in ("Say one.", "Say two.", "Thanks."):
        assert text in masked and text not in learned
    # the pieces joined are exactly the chat template's rendering of the whole conversation
    whole = tiny_tokenizer.apply_chat_template(turns, tokenize=False)
    assert tiny_tokenizer.decode(sample.input_ids) == whole


def test_conversational_completion_with_several_messages_learns_them_all(tmp_path, tiny_tokenizer):
    row = {"prompt": [USER], "completion": [ANSWER, {"role": "assistant", "content": "Yes."}]}
    (record,) = load(write_jsonl(tmp_path / "two.jsonl", [row])).records
    assert record.trained == (1, 2)
    (sample,), _ = tokenize_records([record], tiny_tokenizer, "alpaca", 512)
    assert learned_and_masked(sample, tiny_tokenizer)[0] == "Paris.<|im_end|>\nYes.<|im_end|>\n"


def test_truncation_keeps_learned_turns_or_counts_the_drop(tmp_path, tiny_tokenizer):
    long_user = {"role": "user", "content": "word " * 300}
    rows = [
        {"messages": [USER, ANSWER, long_user, ANSWER]},  # cut inside the second turn
        {"messages": [long_user, ANSWER]},  # the prompt alone fills the context
    ]
    records = load(write_jsonl(tmp_path / "long.jsonl", rows)).records
    samples, report = tokenize_records(records, tiny_tokenizer, "chat", 64)
    assert [s.id for s in samples] == ["long/0"]
    assert len(samples[0].input_ids) == 64
    assert learned_and_masked(samples[0], tiny_tokenizer)[0] == "Paris.<|im_end|>\n"
    assert report.truncated == {"unknown": 1} and report.prompt_too_long == {"unknown": 1}


def test_eval_prompts_from_a_conversational_prompt_only_file(tmp_path, tiny_tokenizer):
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": [USER]}])
    cfg = SourceConfig(kind="local", path=str(path))
    (record,) = load_source(cfg, prompts_only=True).records
    assert render_prompt(record, "alpaca", tiny_tokenizer) == (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )


# ---------------------------------------------------------------- the same rows, any container


def _messages_rows() -> list[dict[str, Any]]:
    return ROWS["messages"] + [{"messages": [USER, {"role": "assistant", "content": "Lyon?"}]}]


@pytest.mark.parametrize("container", ["json", "parquet", "csv", "dataset"])
def test_conversations_read_alike_from_every_container(tmp_path, container):
    rows = _messages_rows()
    expected = [r["messages"] for r in rows]
    if container == "dataset":
        import datasets

        loaded = records_from_dataset(datasets.Dataset.from_list(rows), name="mine")
        assert [r.id for r in loaded.records] == ["mine/0", "mine/1"]
    else:
        path = tmp_path / f"chat.{container}"
        if container == "json":
            path.write_text(json.dumps(rows), encoding="utf-8")
        elif container == "parquet":
            pq.write_table(pa.Table.from_pylist(rows), path)
        else:  # a CSV cell holds the message list as JSON text
            import pandas as pd

            pd.DataFrame([{"messages": json.dumps(r["messages"])} for r in rows]).to_csv(
                path, index=False
            )
        loaded = load(path)
    assert [list(r.messages) for r in loaded.records] == expected
    assert [r.trained for r in loaded.records] == [(2,), (1,)]


def test_csv_prompt_completion_message_lists_as_json_or_python_text(tmp_path):
    import pandas as pd

    as_json = tmp_path / "json.csv"
    pd.DataFrame(
        [{"prompt": json.dumps(CHAT_PAIR["prompt"]), "completion": json.dumps([ANSWER])}]
    ).to_csv(as_json, index=False)
    (record,) = load(as_json).records
    assert (record.form, record.messages) == ("conversation", (SYSTEM, USER, ANSWER))

    as_repr = tmp_path / "repr.csv"  # pandas writes a list cell with str(): not JSON
    pd.DataFrame([CHAT_PAIR]).to_csv(as_repr, index=False)
    with raises_naming(f"{as_repr}: row 1", "'prompt' holds a message list written as Python"):
        load(as_repr)


def test_dataset_object_with_a_field_mapping_and_label():
    import datasets

    ds = datasets.Dataset.from_list([{"q": "Hi?", "a": "Hello.", "key": "u1"}])
    loaded = records_from_dataset(
        ds, fields={"instruction": "q", "response": "a", "id": "key"}, label="benign"
    )
    (record,) = loaded.records
    assert (record.id, record.instruction, record.response, record.source) == (
        "u1",
        "Hi?",
        "Hello.",
        "benign",
    )


# ---------------------------------------------------------------- hub datasets -----------


def test_any_hub_dataset_id_with_a_field_mapping(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, subset=None, split=None):
        calls.append((name, subset, split))
        return datasets.Dataset.from_list([{"question": [USER], "reply": [ANSWER]}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    cfg = from_dict(
        SourceConfig,
        {
            "kind": "hub",
            "dataset": "someone/chat-data",
            "fields": {"instruction": "question", "response": "reply"},
            "label": "benign",
        },
    )
    loaded = load_source(cfg)
    assert calls == [("someone/chat-data", None, "train")]
    (record,) = loaded.records
    assert record.id == "someone/chat-data/train/0"
    assert (record.form, record.messages, record.source) == (
        "conversation",
        (USER, ANSWER),
        "benign",
    )


def test_hub_dataset_from_a_local_folder_without_monkeypatching(tmp_path, monkeypatch):
    """The real load_dataset path, offline: a folder of JSONL files is a dataset id too."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    folder = tmp_path / "repo"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ROWS["messages"])
    (record,) = load_source(SourceConfig(kind="hub", dataset=str(folder))).records
    assert record.messages == (SYSTEM, USER, ANSWER)


def test_a_hub_source_needs_a_preset_or_a_dataset():
    from bds.errors import ConfigError

    with pytest.raises(ConfigError, match="choose one of .*or give `dataset`"):
        from_dict(SourceConfig, {"kind": "hub"})


def test_bad_hub_rows_name_the_dataset_and_row(monkeypatch):
    import datasets

    rows = [CHAT_PAIR, {"prompt": [USER], "completion": []}]
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_list(rows))
    with raises_naming("someone/mixed/train: row 2", "'completion' is an empty list"):
        load_source(SourceConfig(kind="hub", dataset="someone/mixed"))


# ---------------------------------------------------------------- errors -------------------


@pytest.mark.parametrize(
    "first,row,fragments",
    [
        (CHAT_PAIR, {"prompt": [USER], "completion": "Paris."}, ("'completion' is str",)),
        (CHAT_PAIR, {"prompt": "Capital?", "completion": [ANSWER]}, ("'prompt' is str",)),
        (ROWS["instruction"][0], {"instruction": {"t": "Q"}, "response": "A"}, ("an object",)),
        (CHAT, {"messages": [USER]}, ("no assistant turn",)),
        (CHAT, {"messages": "hello there"}, ("not a JSON list of messages",)),
        (CHAT, {"messages": []}, ("non-empty list", "got an empty list")),
        (CHAT, {"text": "Paris."}, ("missing field 'messages'", "messages format")),
        (CHAT, {"messages": {"role": "user"}}, ("non-empty list", "got an object")),
        (CHAT, {"messages": [{"content": "hi"}, ANSWER]}, ("message 0 has no `role`",)),
        (CHAT, {"messages": [USER, {"role": "assistant", "content": 3}]}, ("int '3'",)),
        (CHAT, {"messages": [USER, "Paris."]}, ("message 1 is str",)),
        (CHAT_PAIR, {"prompt": [USER], "completion": []}, ("'completion' is an empty list",)),
        (
            {**CHAT_PAIR, "input": ""},
            {"prompt": [USER], "input": "extra", "completion": [ANSWER]},
            ("'input' has no place in a conversation",),
        ),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, first, row, fragments):
    path = write_jsonl(tmp_path / "bad.jsonl", [first, row])
    with raises_naming(f"{path}:2:", *fragments):
        load(path)


def test_columns_of_no_format_are_refused_with_the_formats_listed(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [{"question_text": "Q", "reply": "A"}])
    with raises_naming(str(path), "no column for record field 'instruction'", "`messages`"):
        load(path)


def test_text_source_cannot_give_eval_prompts(tmp_path):
    path = write_jsonl(tmp_path / "lm.jsonl", ROWS["text"])
    with raises_naming(str(path), "has no prompts"):
        load_source(SourceConfig(kind="local", path=str(path)), prompts_only=True)


def test_conversation_on_a_model_without_chat_template(tmp_path, tiny_tokenizer):
    import copy

    plain = copy.deepcopy(tiny_tokenizer)
    plain.chat_template = None
    (record,) = load(write_jsonl(tmp_path / "c.jsonl", ROWS["messages"])).records
    with raises_naming("record c/0", "has no chat template", "prompt/completion strings"):
        tokenize_records([record], plain, "alpaca", 512)


def test_template_that_is_not_turn_by_turn_is_refused(tmp_path, tiny_tokenizer):
    import copy

    odd = copy.deepcopy(tiny_tokenizer)
    # renders the number of messages first, so a longer conversation is no extension
    odd.chat_template = "{{ messages|length }}" + tiny_tokenizer.chat_template
    (record,) = load(write_jsonl(tmp_path / "c.jsonl", ROWS["messages"])).records
    with raises_naming("record c/0", "does not render turn 2 as an extension"):
        tokenize_records([record], odd, "alpaca", 512)


# ---------------------------------------------------------------- through the CLI ----------


def _chat_config(tmp_path, rows, template: str = "alpaca") -> Path:
    from test_cli_bad_input import write_config

    benign = write_jsonl(tmp_path / "chat.jsonl", rows)
    return write_config(
        tmp_path,
        f"data:\n  benign: {{kind: local, path: {json.dumps(str(benign))}, label: benign}}\n"
        f"  n: {len(rows)}\n  harmful_ratio: 0\n  template: {template}\n",
    )


def test_preview_of_conversations_notes_a_template_mismatch(tmp_path, capsys):
    from test_cli_bad_input import run_cli

    rows = [CHAT, {"messages": [USER, {"role": "assistant", "content": "Lyon?"}]}]
    code, out, err = run_cli(
        capsys, "data", "preview", str(_chat_config(tmp_path, rows)), "--no-tokens"
    )
    assert code == 0, err
    assert "set data.template: chat" in " ".join(out.split())
    assert "{'role'" not in out
    chat = _chat_config(tmp_path, rows, template="chat")
    code, out, err = run_cli(capsys, "data", "preview", str(chat), "--no-tokens")
    assert code == 0 and "data.template" not in out


def test_preview_of_a_malformed_conversation_is_one_sentence(tmp_path, capsys):
    from test_cli_bad_input import assert_bad_input, run_cli

    cfg = _chat_config(tmp_path, [CHAT_PAIR, {"prompt": [USER], "completion": "Paris."}])
    assert_bad_input(
        run_cli(capsys, "data", "preview", str(cfg), "--no-tokens"),
        "chat.jsonl:2:",
        "'completion' is str 'Paris.' but 'prompt' is a list of messages",
    )


def test_fields_on_a_preset_are_refused_not_ignored():
    from bds.errors import ConfigError

    with pytest.raises(ConfigError, match="fields: the hub source 'sst2' has its own columns"):
        from_dict(SourceConfig, {"kind": "hub", "name": "sst2", "fields": {"text": "t"}})
