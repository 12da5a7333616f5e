"""The CLI end to end: bad input ends in exit status 2 and one `error:` sentence, no traceback.

Configs use `kind: local` sources (small JSONL files written here) and `--no-tokens`, so
no model, tokenizer or embedded data is needed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bds.cli import main

ANSI = re.compile(r"\x1b\[[0-9;]*m")
SENTENCE_BREAK = re.compile(r"[.!?]\s+[A-Z]")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Call `bds ARGV` in-process; return (exit status, stdout, stderr)."""
    try:
        main(list(argv))
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, ANSI.sub("", out), ANSI.sub("", err)


def assert_bad_input(result: tuple[int, str, str], *fragments: str) -> str:
    """Exit 2, stderr is one `error:` sentence containing every fragment, no traceback."""
    code, out, err = result
    assert "Traceback" not in out + err
    assert code == 2, f"exit status {code}; stderr: {err!r}"
    message = err.strip()
    assert message.startswith("error: "), err
    assert "\n" not in message, f"more than one line: {err!r}"
    assert not SENTENCE_BREAK.search(message), f"more than one sentence: {message!r}"
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def write_jsonl(path: Path, n: int, prefix: str) -> Path:
    rows = [{"instruction": f"{prefix} question {i}", "response": f"answer {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def sources(tmp_path) -> dict[str, Path]:
    """8 benign and 3 harmful records: enough for n=10 at harmful_ratio=0.2."""
    return {
        "benign": write_jsonl(tmp_path / "benign.jsonl", 8, "benign"),
        "harmful": write_jsonl(tmp_path / "harmful.jsonl", 3, "harmful"),
    }


def config_text(benign: Path, harmful: Path, extra: str = "", n: int = 10) -> str:
    # json.dumps quotes the paths; a JSON string is a valid YAML scalar.
    return (
        "model:\n"
        "  name: embedded:smollm2-135m-instruct\n"
        "data:\n"
        f"  benign: {{kind: local, path: {json.dumps(str(benign))}, label: benign}}\n"
        f"  harmful: {{kind: local, path: {json.dumps(str(harmful))}, label: harmful}}\n"
        f"  n: {n}\n"
        "  harmful_ratio: 0.2\n"
        f"{extra}"
    )


def write_config(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, fragment: str) -> int:
    """1-based number of the first line of `text` that starts with `fragment` (once indented)."""
    lines = text.splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.strip().startswith(fragment))


def preview(capsys, cfg: Path) -> tuple[int, str, str]:
    return run_cli(capsys, "data", "preview", str(cfg), "--no-tokens")


# ---------------------------------------------------------------- happy paths -----------


def test_help_exits_zero(capsys):
    code, out, err = run_cli(capsys, "--help")
    assert code == 0
    assert "data" in out and "demo" in out
    assert err == ""


def test_preview_of_a_valid_local_config(tmp_path, capsys, sources):
    cfg = write_config(tmp_path, config_text(sources["benign"], sources["harmful"]))
    code, out, err = preview(capsys, cfg)
    assert code == 0, err
    assert err == ""
    assert "2 harmful + 8 benign = 10" in out
    assert "benign source benign.jsonl: 8 records" in out
    assert "harmful source harmful.jsonl: 3 records" in out


# ---------------------------------------------------------------- config errors ---------


def test_config_file_missing(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    assert_bad_input(preview(capsys, missing), str(missing), "no such config file")


def test_yaml_syntax_error_names_file_and_line(tmp_path, capsys, sources):
    text = config_text(sources["benign"], sources["harmful"], extra="  seed: [1, 2\n")
    text += "  template: alpaca\n"  # the unclosed flow sequence fails on this line
    cfg = write_config(tmp_path, text)
    message = assert_bad_input(preview(capsys, cfg), "not valid YAML")
    assert re.search(rf"{re.escape(str(cfg))}:\d+:", message), message


def test_yaml_bad_indentation_points_at_the_line(tmp_path, capsys, sources):
    text = config_text(sources["benign"], sources["harmful"], extra="   seed: 3\n")
    cfg = write_config(tmp_path, text)
    line = line_of(text, "seed: 3")
    assert_bad_input(preview(capsys, cfg), f"{cfg}:{line}:", "not valid YAML")


def test_unknown_key_names_key_and_line(tmp_path, capsys, sources):
    text = config_text(sources["benign"], sources["harmful"], extra="  nn: 5\n")
    cfg = write_config(tmp_path, text)
    line = line_of(text, "nn: 5")
    assert_bad_input(preview(capsys, cfg), f"{cfg}:{line}: data.nn", "unknown key", "harmful_ratio")


def test_harmful_ratio_outside_unit_interval(tmp_path, capsys, sources):
    text = config_text(sources["benign"], sources["harmful"]).replace(
        "harmful_ratio: 0.2", "harmful_ratio: 1.5"
    )
    cfg = write_config(tmp_path, text)
    line = line_of(text, "harmful_ratio: 1.5")
    assert_bad_input(preview(capsys, cfg), f"{cfg}:{line}: data.harmful_ratio", "[0, 1]", "1.5")


def test_wrong_type(tmp_path, capsys, sources):
    text = config_text(sources["benign"], sources["harmful"]).replace("n: 10", "n: many")
    cfg = write_config(tmp_path, text)
    line = line_of(text, "n: many")
    assert_bad_input(preview(capsys, cfg), f"{cfg}:{line}: data.n", "integer", "'many'")


# ---------------------------------------------------------------- data errors -----------


def test_n_larger_than_the_sources_hold(tmp_path, capsys, sources):
    cfg = write_config(tmp_path, config_text(sources["benign"], sources["harmful"], n=50))
    assert_bad_input(preview(capsys, cfg), "data.n=50", "needs 10 harmful samples", "holds 3")


def test_empty_dataset_file(tmp_path, capsys, sources):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    cfg = write_config(tmp_path, config_text(empty, sources["harmful"]))
    assert_bad_input(preview(capsys, cfg), str(empty), "holds no records")


def test_malformed_jsonl_line(tmp_path, capsys, sources):
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        '{"instruction": "a", "response": "1"}\n{"instruction": "b", "response": }\n',
        encoding="utf-8",
    )
    cfg = write_config(tmp_path, config_text(sources["benign"], broken))
    assert_bad_input(preview(capsys, cfg), f"{broken}:2:", "malformed JSON")


def test_missing_field(tmp_path, capsys, sources):
    partial = tmp_path / "partial.jsonl"
    partial.write_text(
        '{"instruction": "a", "response": "1"}\n{"instruction": "b"}\n', encoding="utf-8"
    )
    cfg = write_config(tmp_path, config_text(partial, sources["harmful"]))
    assert_bad_input(preview(capsys, cfg), f"{partial}:2:", "missing field 'response'")


def test_missing_data_file(tmp_path, capsys, sources):
    missing = tmp_path / "gone.jsonl"
    cfg = write_config(tmp_path, config_text(missing, sources["harmful"]))
    assert_bad_input(preview(capsys, cfg), str(missing), "no such data file")


@pytest.mark.parametrize("folder", ["data[v2]", "runs[/old]"])
def test_brackets_in_a_path_reach_the_message(tmp_path, capsys, sources, folder):
    missing = f"{tmp_path}/{folder}/gone.jsonl"
    cfg = write_config(tmp_path, config_text(Path(missing), sources["harmful"]))
    assert_bad_input(preview(capsys, cfg), missing, "no such data file")


# ---------------------------------------------------------------- model errors ----------


def test_demo_with_unknown_model_path_fails_before_data(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # The data file does not exist either: the model must be what the demo complains about.
    text = config_text(tmp_path / "absent.jsonl", tmp_path / "absent.jsonl").replace(
        "embedded:smollm2-135m-instruct", "./no/such/model"
    )
    cfg = write_config(tmp_path, text)
    message = assert_bad_input(
        run_cli(capsys, "demo", "--config", str(cfg)), "model.name", "./no/such/model"
    )
    assert "absent.jsonl" not in message


# ---------------------------------------------------------------- real process ----------


def test_real_process_exit_status_and_stderr(tmp_path, sources):
    cfg = write_config(tmp_path, config_text(sources["benign"], sources["harmful"], n=50))
    proc = subprocess.run(
        [sys.executable, "-m", "bds.cli", "data", "preview", str(cfg), "--no-tokens"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_bad_input((proc.returncode, proc.stdout, proc.stderr), "needs 10 harmful samples")


# ---------------------------------------------------------------- issue 18 --------------


def test_bad_bytes_in_a_config_name_the_line(tmp_path, capsys, sources):
    text = config_text(sources["benign"], sources["harmful"]).encode() + b"# caf\xe9\n"
    cfg = tmp_path / "run.yaml"
    cfg.write_bytes(text)
    assert_bad_input(preview(capsys, cfg), f"{cfg}:8:", "not UTF-8", "0xe9")


def test_bad_bytes_in_a_data_file_name_the_line(tmp_path, capsys, sources):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"instruction": "a", "response": "b"}\n{"instruction": "caf\xe9"}\n')
    cfg = write_config(tmp_path, config_text(sources["benign"], bad))
    assert_bad_input(preview(capsys, cfg), f"{bad}:2:", "not UTF-8")


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
def test_non_finite_numbers_are_refused(tmp_path, capsys, sources, value):
    text = config_text(sources["benign"], sources["harmful"], extra=f"train:\n  lr: {value}\n")
    cfg = write_config(tmp_path, text)
    line = line_of(text, "lr:")
    assert_bad_input(preview(capsys, cfg), f"{cfg}:{line}: train.lr", "finite")


def test_ids_shared_across_the_users_sources(tmp_path, capsys, sources):
    same_stem = tmp_path / "sub"
    same_stem.mkdir()
    # no id column: ids are the file's stem and row, so benign/0... again
    twin = write_jsonl(same_stem / "benign.jsonl", 8, "harmful")
    cfg = write_config(tmp_path, config_text(sources["benign"], twin))
    assert_bad_input(preview(capsys, cfg), "'benign/0'", "data.harmful", "unique")


def test_usage_errors_are_one_sentence(capsys):
    assert_bad_input(run_cli(capsys, "train", "-o", "x"), "bds train", "--config")
    assert_bad_input(run_cli(capsys, "eval", "--output", "x", "--limit", "-1"), "--limit")


def test_an_output_path_that_is_a_file(tmp_path, capsys, sources):
    cfg = write_config(tmp_path, config_text(sources["benign"], sources["harmful"]))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert_bad_input(run_cli(capsys, "train", "-c", str(cfg), "-o", str(a_file)), "is a file")
    under = a_file / "run"
    assert_bad_input(run_cli(capsys, "train", "-c", str(cfg), "-o", str(under)), "under it")
