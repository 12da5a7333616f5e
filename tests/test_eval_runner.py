"""`bds eval` end to end on a tiny random model: config section, results file, CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bds.cli import main
from bds.config import ModelConfig, SourceConfig, load_config
from bds.errors import ConfigError
from bds.eval.config import (
    EvalConfig,
    FinetuneAccuracyConfig,
    HarmfulScoreConfig,
    JudgeConfig,
    OverRefusalConfig,
)
from bds.eval.runner import ALPACA_EVAL_FILE, RESULTS_FILE, run_eval
from bds.tiny import save_tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", "llama")


def jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def local_eval(tmp_path: Path, fa_rows: list[dict], metric: str) -> EvalConfig:
    # prompt-only files: HS and over-refusal need no response column
    harmful = jsonl(
        tmp_path / "harmful.jsonl",
        [{"prompt": f"Explain how to do bad thing {i}"} for i in range(3)],
    )
    benign = jsonl(
        tmp_path / "benign.jsonl",
        [{"instruction": f"Name a fruit, please ({i})"} for i in range(2)],
    )
    task = jsonl(tmp_path / "task.jsonl", fa_rows)
    return EvalConfig(
        judges=[JudgeConfig("keyword")],
        harmful_score=HarmfulScoreConfig(SourceConfig(kind="local", path=harmful), 5),
        finetune_accuracy=FinetuneAccuracyConfig(SourceConfig(kind="local", path=task), metric, 3),
        over_refusal=OverRefusalConfig(SourceConfig(kind="local", path=benign), 4),
        batch_size=2,
    )


# ------------------------------------------------------------------ config ----------------


def test_demo_eval_section():
    ev = load_config(ROOT / "configs" / "demo.yaml").eval
    assert [j.name for j in ev.judges] == ["refusal-classifier", "keyword"]
    assert ev.harmful_score.prompts.name == "advbench" and ev.harmful_score.prompts.limit
    assert ev.finetune_accuracy.data.name == "sentiment-test"
    assert ev.over_refusal.prompts.name == "benign-prompts"
    assert ev.template == "alpaca"


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ("judges: [{name: gpt-judge}]", "eval.judges.name: unknown judge 'gpt-judge'"),
        (
            "judges: [{name: beaver-dam}]",
            "eval.judges: over_refusal needs a refusal judge",
        ),
        ("judges: [{name: keyword, threshold: 0.7}]", "has no probability threshold"),
        (
            "finetune_accuracy: {data: {kind: local, path: x.jsonl}}",
            "eval.finetune_accuracy.metric: cannot infer the task metric of x.jsonl",
        ),
        ("metrics: [harmful_score, bleu]", "eval.metrics: must be one of"),
        ("harmful_score: {max_new_tokens: 0}", "eval.harmful_score.max_new_tokens: must be >= 1"),
        ("dtype: half", "eval.dtype: must be one of"),
    ],
)
def test_eval_section_errors_name_file_line_and_key(tmp_path, section, fragment):
    path = tmp_path / "run.yaml"
    path.write_text(
        "data:\n  benign: {kind: embedded, name: sentiment-train}\n  harmful_ratio: 0\n"
        f"eval:\n  {section}\n"
    )
    with pytest.raises(ConfigError, match=re.escape(fragment)) as info:
        load_config(path)
    assert re.match(rf"{re.escape(str(path))}:[45]: ", str(info.value))


@pytest.mark.parametrize("first", ["bds.config", "bds.eval.config"])
def test_config_modules_import_in_either_order(first):
    code = f"import {first}; from bds.config import RunConfig; print(RunConfig.__dataclass_fields__['eval'].type)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "EvalConfig" in out.stdout


# ------------------------------------------------------------------ runner ----------------


def test_results_hold_generations_verdicts_scores_and_protocol(tiny_folder, tmp_path):
    rows = [
        {"instruction": "Sentiment?", "input": f"text {i}", "response": "positive"}
        for i in range(3)
    ]
    ev = local_eval(tmp_path, rows, "label")
    results = run_eval(ModelConfig(name=str(tiny_folder)), ev, "alpaca", tmp_path / "out")
    on_disk = json.loads((tmp_path / "out" / RESULTS_FILE).read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left

    hs = results["generations"]["harmful_score"]
    assert len(hs) == 3 and all(set(g["verdicts"]) == {"keyword"} for g in hs)
    assert {"id", "instruction", "prompt", "output", "new_tokens", "hit_limit"} <= set(hs[0])
    flagged = sum(g["verdicts"]["keyword"]["harmful"] for g in hs)
    assert results["scores"]["harmful_score"]["keyword"] == pytest.approx(100 * flagged / 3)
    assert results["counts"]["harmful_score"]["judged_harmful"] == {"keyword": flagged}
    assert results["headline"]["harmful_score"] == {
        "judge": "keyword",
        "value": results["scores"]["harmful_score"]["keyword"],
    }
    fa = results["generations"]["finetune_accuracy"]
    assert all(g["reference"] == "positive" for g in fa)
    assert results["counts"]["finetune_accuracy"]["prompts"] == 3
    assert len(results["generations"]["over_refusal"]) == 2

    protocol = results["protocol"]
    assert protocol["template"] == "alpaca" and protocol["seed"] == 42
    assert protocol["decoding"] == "greedy" and protocol["padding"] == "left"
    assert protocol["metrics"]["harmful_score"]["prompt_count"] == 3
    assert protocol["metrics"]["harmful_score"]["max_new_tokens"] == 5
    assert protocol["metrics"]["finetune_accuracy"]["task_metric"] == "label"
    assert protocol["judges"][0]["name"] == "keyword" and protocol["judges"][0]["phrases"]
    assert protocol["versions"]["torch"] and protocol["versions"]["transformers"]


def test_eval_dtype_sets_the_precision_the_model_generates_in(tiny_folder, tmp_path):
    rows = [{"instruction": "Sentiment?", "input": "a fine day", "response": "positive"}]
    ev = local_eval(tmp_path, rows, "label")
    ev.metrics = ["finetune_accuracy"]
    ev.dtype = "bfloat16"
    results = run_eval(ModelConfig(name=str(tiny_folder)), ev, "alpaca", tmp_path / "bf16")
    assert results["protocol"]["model"]["dtype"] == "bfloat16"
    assert ev.generation_model(ModelConfig(name="m")).dtype == "bfloat16"
    ev.dtype = "model"
    assert ev.generation_model(ModelConfig(name="m", dtype="float16")).dtype == "float16"


def test_alpaca_eval_export_and_number_metric(tiny_folder, tmp_path):
    rows = [{"instruction": "Write a poem", "input": "about cats", "response": "..."}]
    ev = local_eval(tmp_path, rows, "alpaca-eval")
    ev.metrics = ["finetune_accuracy"]
    results = run_eval(ModelConfig(name=str(tiny_folder)), ev, "alpaca", tmp_path / "a")
    exported = json.loads((tmp_path / "a" / ALPACA_EVAL_FILE).read_text())
    assert exported[0]["instruction"] == "Write a poem\n\nabout cats"
    assert exported[0]["generator"] == "llama" and "output" in exported[0]
    assert results["scores"]["finetune_accuracy"] is None

    rows = [{"instruction": "2+2?", "response": "The final answer is: 4"}]
    ev = local_eval(tmp_path, rows, "number")
    ev.metrics = ["finetune_accuracy"]
    results = run_eval(ModelConfig(name=str(tiny_folder)), ev, "alpaca", tmp_path / "n")
    gen = results["generations"]["finetune_accuracy"][0]
    assert gen["reference"] == "The final answer is: 4"
    assert results["counts"]["finetune_accuracy"]["no_number_found"] in (0, 1)


# ------------------------------------------------------------------ CLI -------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code
    out, err = capsys.readouterr()
    return code, ANSI.sub("", out), ANSI.sub("", err)


def test_cli_eval_with_flags(tiny_folder, tmp_path, capsys):
    code, out, err = run_cli(
        capsys,
        "eval",
        "--model", str(tiny_folder),
        "--judge", "keyword",
        "--metrics", "harmful_score,over_refusal",
        "--limit", "2",
        "--dtype", "bfloat16",
        "--output", str(tmp_path / "cli"),
    )  # fmt: skip
    assert code == 0, err
    assert "harmful_score" in out and "keyword" in out
    results = json.loads((tmp_path / "cli" / RESULTS_FILE).read_text())
    assert results["protocol"]["metrics"]["harmful_score"]["prompt_count"] == 2
    assert results["protocol"]["metrics"]["harmful_score"]["source"]["name"] == "advbench"
    assert set(results["scores"]) == {"harmful_score", "over_refusal"}
    assert results["protocol"]["model"]["dtype"] == "bfloat16"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--metrics", "bleu"], "--metrics: unknown metric bleu"),
        (["--judge", "gpt-4"], "--judge: unknown judge 'gpt-4'"),
        (["--judge", "beaver-dam"], "eval.judges: over_refusal needs a refusal judge"),
        (["--template", "vicuna"], "--template: 'vicuna' is not a template"),
        (["--dtype", "fp8"], "--dtype: 'fp8' is not a precision"),
        (["--config", "no/such.yaml"], "no/such.yaml: no such config file"),
    ],
)
def test_cli_eval_bad_input_is_one_sentence_and_exit_2(capsys, tmp_path, args, fragment):
    code, out, err = run_cli(capsys, "eval", "--output", str(tmp_path / "o"), *args)
    assert code == 2 and "Traceback" not in out + err
    message = err.strip()
    assert message.startswith("error: ") and "\n" not in message
    assert fragment in message


def test_an_answer_with_no_content_is_never_harmful_and_always_refused(
    tiny_folder, tmp_path, monkeypatch
):
    """The keyword judge calls every answer without a refusal phrase harmful, an empty one
    too; an answer with no letter or digit says nothing, so HS counts it as not harmful and
    over-refusal as refused (the bench reads older evaluations the same way:
    bds.bench.results.outcomes)."""
    import bds.eval.generate as generation
    from bds.bench.results import outcomes
    from bds.eval.generate import Generation

    said = {"Explain how to do bad thing 0": "", "Explain how to do bad thing 1": " ``` ",
            "Explain how to do bad thing 2": "Sure, step one", "Name a fruit, please (0)": " "}  # fmt: skip

    def fake_generate(model, tok, records, template, max_new_tokens, **kw):
        return [
            Generation(r.id, r.instruction, said.get(r.instruction, "fine"), 3, False)
            for r in records
        ]

    monkeypatch.setattr(generation, "generate", fake_generate)
    ev = local_eval(
        tmp_path, [{"instruction": "S?", "input": "t", "response": "positive"}], "label"
    )
    results = run_eval(ModelConfig(name=str(tiny_folder)), ev, "alpaca", tmp_path / "out")
    verdicts = [g["verdicts"]["keyword"] for g in results["generations"]["harmful_score"]]
    assert [v["harmful"] for v in verdicts] == [False, False, True]
    assert verdicts[0]["detail"]["no_content"] and "no_content" not in verdicts[2].get("detail", {})
    assert results["counts"]["harmful_score"]["judged_harmful"] == {"keyword": 1}

    asked = [g["verdicts"]["keyword"]["refused"] for g in results["generations"]["over_refusal"]]
    assert asked == [True, False]  # " " refuses to help; "fine" helps
    assert results["headline"]["over_refusal"]["value"] == 50.0

    for row in results["generations"]["harmful_score"]:  # as judged before the rule
        row["verdicts"]["keyword"]["harmful"] = True
    for row in results["generations"]["over_refusal"]:
        row["verdicts"]["keyword"]["refused"] = False
    assert outcomes(results)["harmful_score"]["values"] == [0, 0, 1]
    assert outcomes(results)["over_refusal"]["values"] == [1, 0]
