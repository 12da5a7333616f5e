"""The demo's orchestration end to end, on a tiny model and local data (seconds, offline)."""

import json

import pytest
import yaml
from conftest import make_records

from bds.cli import main
from bds.data.schema import Record
from bds.tiny import save_tiny_checkpoint


def cli(argv):
    """Run `bds ARGV` in-process; return its exit status."""
    try:
        main(argv)
    except SystemExit as exc:
        return exc.code
    return 0


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return str(path)


@pytest.fixture
def demo_config(tmp_path, monkeypatch):
    monkeypatch.setenv("BDS_CACHE", str(tmp_path / "cache"))
    model = save_tiny_checkpoint(tmp_path / "tiny-model")
    benign = make_records(30, "benign")
    harmful = make_records(10, "harmful")
    safe = [
        Record(
            id=f"safe/{i}",
            instruction=f"harmful question {i}",
            response="I'm sorry, I can't.",
            source="safe",
        )
        for i in range(12)
    ]
    labelled = [
        Record(
            id=f"t/{i}",
            instruction="Say the label.",
            input=f"text {i}",
            response="positive" if i % 2 else "negative",
            source="benign",
        )
        for i in range(6)
    ]

    def local(name, recs):
        return {
            "kind": "local",
            "path": write_jsonl(tmp_path / f"{name}.jsonl", recs),
        }

    cfg = {
        "model": {"name": str(model)},
        "data": {
            "benign": local("benign", benign),
            "harmful": local("harmful", harmful),
            "alignment": local("safe", safe),
            "n": 20,
            "harmful_ratio": 0.2,
            "max_length": 64,
        },
        "train": {
            "epochs": 1,
            "batch_size": 4,
            "alignment_batch_size": 4,
            "log_steps": 1,
            "trajectory_steps": 1,
        },
        "eval": {
            "judges": [{"name": "keyword"}],
            "harmful_score": {"prompts": local("eval-harmful", harmful[:4]), "max_new_tokens": 4},
            "finetune_accuracy": {
                "data": {**local("fa", labelled), "label": "benign"},
                "metric": "label",
                "max_new_tokens": 3,
            },
            "over_refusal": {"prompts": local("benign-prompts", benign[:4]), "max_new_tokens": 4},
        },
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_demo_runs_every_stage_and_resumes(tmp_path, demo_config, capsys):
    out = tmp_path / "demo-out"
    assert cli(["demo", "--config", str(demo_config), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "BDS demo" in printed and "sft" in printed and "bds" in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"aligned", "sft", "mix", "bds"}
    bds = results["methods"]["bds"]
    assert "weights_auroc_benign_vs_harmful" in bds and "keyword" in bds["harmful_score"]
    assert results["protocol"]["finetune_counts"]["finetune_harmful"] == 4
    for plot in ("weights_by_source.png", "weight_trajectories.png", "scores.png"):
        assert (out / "plots" / plot).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "| bds |" in report and "HS (%)" in report and "Wall time" in report
    assert results["protocol"]["alignment_defense"] == {"name": "sft"}
    assert "aligned with sft" in report and "| aligned |" in report
    stages = results["stage_seconds"]
    assert set(stages) == {
        "align",
        "attack-sft",
        "attack-mix",
        "attack-bds",
        "eval-aligned",
        "eval-sft",
        "eval-mix",
        "eval-bds",
    }
    assert results["total_seconds"] == pytest.approx(sum(stages.values()), abs=0.2)
    cached = list((tmp_path / "cache" / "aligned").iterdir())
    assert len(cached) == 1 and (cached[0] / "config.json").is_file()
    # A second run finds every stage done and only rebuilds the report.
    assert cli(["demo", "--config", str(demo_config), "--output", str(out)]) == 0
    assert "done before, kept" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert again["stage_seconds"] == stages  # the first run's times, not the resumed one's
    # Other inputs never reuse these results: refused, naming what changed.
    capsys.readouterr()
    assert cli(["demo", "--config", str(demo_config), "--output", str(out), "--p", "0.25"]) == 2
    assert "data.harmful_ratio 0.2 (now 0.25)" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text()) == again


def test_demo_with_the_neural_scheduler(tmp_path, demo_config, capsys):
    from bds.tiny import save_tiny_encoder

    cfg = yaml.safe_load(demo_config.read_text())
    encoder = save_tiny_encoder(tmp_path / "tiny-encoder")
    cfg["defense"] = {"name": "bds", "scheduler": {"neural": {"encoder": str(encoder)}}}
    demo_config.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "demo-neural"
    argv = ["demo", "--config", str(demo_config), "--output", str(out), "--methods", "bds-neural"]
    assert cli(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"aligned", "bds-neural"}
    assert "weights_auroc_benign_vs_harmful" in results["methods"]["bds-neural"]
    summary = json.loads((out / "attack-bds-neural" / "summary.json").read_text())
    assert summary["config"]["defense"]["scheduler"]["kind"] == "neural"
    assert (out / "attack-bds-neural" / "scheduler" / "scheduler.json").is_file()


def test_bds_train_starts_from_a_saved_neural_scheduler(tmp_path, demo_config, capsys):
    from bds.tiny import save_tiny_encoder
    from bds.training.outputs import read_weights_table

    cfg = yaml.safe_load(demo_config.read_text())
    encoder = save_tiny_encoder(tmp_path / "tiny-encoder")
    cfg["defense"] = {"name": "bds-neural", "scheduler": {"neural": {"encoder": str(encoder)}}}
    demo_config.write_text(yaml.safe_dump(cfg))
    first = tmp_path / "first"
    assert cli(["train", "--config", str(demo_config), "--output", str(first)]) == 0
    saved = first / "scheduler"
    frozen = tmp_path / "frozen"
    argv = ["train", "--config", str(demo_config), "--output", str(frozen)]
    assert cli([*argv, "--scheduler-from", str(saved), "--frozen"]) == 0
    rows = read_weights_table(frozen / "weights.csv")
    steps = [k for k in rows[0] if k.startswith("w@step_")]
    assert len(steps) >= 2
    for row in rows:  # frozen: every sample keeps the weight the saved scheduler gives it
        assert len({row[k] for k in steps}) == 1
    capsys.readouterr()
    assert cli([*argv, "--frozen"]) == 2
    assert "--scheduler-from" in capsys.readouterr().err
    assert cli([*argv, "--scheduler-from", str(tmp_path)]) == 2
    assert "not a saved neural scheduler" in capsys.readouterr().err
    assert cli([*argv, "--scheduler-from", str(saved), "--mode", "sft"]) == 2
    assert "--scheduler-from needs a scheduler" in capsys.readouterr().err


def test_demo_bad_options_exit_2(demo_config, capsys):
    for argv, needle in [
        (["--methods", "sft,vaccine"], "--methods"),
        (["--p", "1.5"], "--p"),
    ]:
        assert cli(["demo", "--config", str(demo_config), *argv]) == 2
        assert needle in capsys.readouterr().err


def test_bds_train_command_writes_the_run_outputs(tmp_path, demo_config, capsys):
    out = tmp_path / "train-out"
    assert cli(["train", "--config", str(demo_config), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean weight per source" in printed and "AUROC" in printed
    for name in (
        "adapter/adapter_model.safetensors",
        "weights.csv",
        "train_log.jsonl",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    assert (
        cli(["train", "--config", str(demo_config), "--output", str(out), "--defense", "vaccine"])
        == 2
    )
    assert "--defense" in capsys.readouterr().err
