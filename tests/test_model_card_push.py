"""A trained adapter folder carries a model card (hub front matter, defense, weights,
evaluation), and `bds train --push-to-hub` / `BDSTrainer.push_to_hub` upload that folder.
The hub is never reached: HfApi's methods are replaced and what they would send is checked;
offline or without a token, the push is one sentence (exit 2) before any training."""

from __future__ import annotations

import json

import pytest
import yaml
from test_cli_bad_input import assert_bad_input, config_text, run_cli, sources, write_config
from tiny_embedded import embedded_is_tiny, tiny_cache

from bds.errors import BDSInputError
from bds.model_card import hub_base_model, model_card

__all__ = ["embedded_is_tiny", "sources", "tiny_cache"]  # fixtures, used by name below


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture
def trained_run(tmp_path, sources, embedded_is_tiny, one_thread):
    """`bds train` on the tiny embedded stand-in with local data (BDS, labelled sources)."""
    alignment = tmp_path / "safe.jsonl"
    alignment.write_text(
        "".join(
            json.dumps({"prompt": f"harmful question {i}", "completion": "No."}) + "\n"
            for i in range(4)
        )
    )
    extra = (
        f"  alignment: {{kind: local, path: {json.dumps(str(alignment))}, label: safe}}\n"
        "  max_length: 64\n"
        "train: {epochs: 1, batch_size: 5, alignment_batch_size: 2, mixed_precision: 'no', log_steps: 1}\n"
    )
    cfg = write_config(tmp_path, config_text(sources["benign"], sources["harmful"], extra))
    return cfg, tmp_path / "run"


class FakeHub:
    """HfApi.create_repo / upload_folder, recording what they would send."""

    def __init__(self, monkeypatch):
        import huggingface_hub

        import bds.push

        self.calls: list[tuple[str, dict]] = []
        monkeypatch.setattr(bds.push, "_offline", lambda: False)
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test_token")
        # plain functions: as class attributes they are bound to the HfApi instance
        monkeypatch.setattr(
            huggingface_hub.HfApi,
            "create_repo",
            lambda api, *a, **k: self.create_repo(api, *a, **k),
        )
        monkeypatch.setattr(
            huggingface_hub.HfApi, "upload_folder", lambda api, **k: self.upload_folder(api, **k)
        )

    def create_repo(self, api, repo_id, **kwargs):
        self.calls.append(("create_repo", {"repo_id": repo_id, "token": api.token, **kwargs}))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, api, **kwargs):
        from fnmatch import fnmatch
        from pathlib import Path

        folder = Path(kwargs["folder_path"])
        files = sorted(
            p.name
            for p in folder.iterdir()
            if any(fnmatch(p.name, pat) for pat in kwargs["allow_patterns"])
        )
        self.calls.append(("upload_folder", {**kwargs, "files": files}))


def test_bds_train_writes_a_card_and_pushes_the_adapter(capsys, monkeypatch, trained_run):
    hub = FakeHub(monkeypatch)
    cfg, out = trained_run
    code, stdout, err = run_cli(
        capsys, "train", "-c", str(cfg), "-o", str(out), "--push-to-hub", "me/bds-adapter"
    )
    assert code == 0, err
    card = (out / "adapter" / "README.md").read_text()
    meta = front_matter(card)
    assert (
        meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    )  # the embedded model's origin
    assert meta["library_name"] == "peft" and "defense:bds" in meta["tags"]
    summary = json.loads((out / "summary.json").read_text())
    for source, mean in summary["weights"]["mean_weight"].items():
        assert f"| {source} | " in card and f"{mean:.3f}" in card
    assert f"{summary['weights']['auroc_benign_vs_harmful']:.3f}" in card
    assert "## Defense: `bds`" in card and "scheduler:" in card
    assert "## Evaluation" not in card  # not evaluated
    assert [name for name, _ in hub.calls] == ["create_repo", "upload_folder"]
    create, upload = hub.calls[0][1], hub.calls[1][1]
    assert (
        create["repo_id"] == "me/bds-adapter" and create["exist_ok"] and create["private"] is False
    )
    assert create["token"] == "hf_test_token"
    assert upload["repo_id"] == "me/bds-adapter" and upload["folder_path"] == str(out / "adapter")
    assert upload["files"] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert "adapter uploaded to https://huggingface.co/me/bds-adapter" in stdout


@pytest.mark.parametrize(
    ("setup", "fragments"),
    [
        ("offline", ("--push-to-hub", "HF_HUB_OFFLINE is set", "me/x")),
        ("no-token", ("--push-to-hub", "no hub token", "hf auth login")),
        ("bad-id", ("--push-to-hub", "'not a/valid id' is not a hub repo id")),
    ],
)
def test_a_push_that_cannot_work_is_one_sentence_before_training(
    capsys, monkeypatch, tmp_path, sources, setup, fragments
):
    import huggingface_hub

    import bds.push

    monkeypatch.setattr(bds.push, "_offline", lambda: setup == "offline")
    monkeypatch.setattr(
        huggingface_hub, "get_token", lambda: None if setup == "no-token" else "hf_x"
    )
    repo = "not a/valid id" if setup == "bad-id" else "me/x"
    cfg = write_config(tmp_path, config_text(sources["benign"], sources["harmful"]))
    out = tmp_path / "run"
    assert_bad_input(
        run_cli(capsys, "train", "-c", str(cfg), "-o", str(out), "--push-to-hub", repo), *fragments
    )
    assert not out.exists()  # nothing trained, nothing written


def test_an_upload_failure_is_one_sentence(monkeypatch, tmp_path):
    import huggingface_hub

    from bds.push import push_adapter

    FakeHub(monkeypatch)

    def refused(api, **kwargs):
        raise PermissionError("403 Forbidden: you cannot write to me/x.\nDetails follow")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refused)
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(
        BDSInputError, match=r"uploading to me/x failed \(PermissionError: 403 Forbidden"
    ):
        push_adapter(tmp_path, "me/x")


def test_the_trainer_pushes_what_it_trained(monkeypatch, tmp_path, embedded_is_tiny, one_thread):
    from datasets import Dataset

    from bds import BDSConfig, BDSTrainer

    hub = FakeHub(monkeypatch)
    rows = [{"prompt": f"Say {i}", "completion": f"{i}"} for i in range(4)]
    trainer = BDSTrainer(
        args=BDSConfig(
            output_dir=str(tmp_path / "run"),
            num_train_epochs=1,
            per_device_train_batch_size=2,
            defense="sft",
            mixed_precision="no",
            max_length=64,
        ),
        train_dataset=Dataset.from_list(rows),
    )
    with pytest.raises(BDSInputError, match="call train"):
        trainer.push_to_hub("me/x")
    trainer.train()
    assert trainer.push_to_hub("me/x", private=True) == "https://huggingface.co/me/x"
    assert hub.calls[0][1]["private"] is True
    assert "README.md" in hub.calls[1][1]["files"]
    saved = trainer.save_model(tmp_path / "shared")
    assert sorted(p.name for p in saved.iterdir()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]


def test_the_card_names_hub_bases_and_reports_an_evaluation():
    summary = {
        "steps": 10,
        "config": {
            "model": {"name": "meta-llama/Llama-2-7b-hf"},
            "defense": {"name": "mix", "alignment_weight": 1.0},
            "train": {
                "epochs": 1,
                "lr": 1e-3,
                "lora": {"r": 8, "alpha": 16, "target_modules": ["q_proj"]},
            },
        },
    }
    evaluation = {
        "headline": {
            "harmful_score": {"judge": "keyword", "value": 12.5},
            "finetune_accuracy": {"value": 80.0},
        },
        "counts": {"harmful_score": {"prompts": 8}, "finetune_accuracy": {"prompts": 20}},
        "protocol": {"template": "alpaca"},
    }
    card = model_card(summary, evaluation)
    assert front_matter(card)["base_model"] == "meta-llama/Llama-2-7b-hf"
    assert "| harmful_score | keyword | 12.5 | 8 |" in card
    assert "| finetune_accuracy | - | 80.0 | 20 |" in card
    assert "## Per-sample weights" not in card  # mix has none
    assert "alignment_weight: 1.0" in card
    assert hub_base_model("/some/local/folder") is None
    assert "base_model" not in front_matter(model_card({"config": {"model": {"name": "./folder"}}}))


def test_bds_train_eval_puts_the_scores_in_the_card(capsys, trained_run):
    cfg, out = trained_run
    small_eval = [
        "eval.metrics=[harmful_score]",
        "eval.judges=[{name: keyword}]",
        "eval.harmful_score.prompts={kind: embedded, name: advbench, limit: 3}",
        "eval.harmful_score.max_new_tokens=4",
    ]
    code, _, err = run_cli(capsys, "train", "-c", str(cfg), "-o", str(out), "--eval", *small_eval)
    assert code == 0, err
    results = json.loads((out / "eval" / "results.json").read_text())
    assert results["protocol"]["model"]["adapter"] == str(out / "adapter")
    score = results["headline"]["harmful_score"]["value"]
    card = (out / "adapter" / "README.md").read_text()
    assert f"| harmful_score | keyword | {score:.1f} | 3 |" in card
