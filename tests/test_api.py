"""The Python API (`from bds import BDSConfig, BDSTrainer`): the README's quick start runs
as written, weights come back joined on the user's ids, every TRL format trains, and bad
input is one sentence. The embedded model is replaced by a tiny checkpoint (through
BDS_CACHE, where the embedded model's converted folder lives) so each run takes seconds."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_embedded import embedded_is_tiny, tiny_cache

from bds.errors import BDSInputError

ROOT = Path(__file__).resolve().parents[1]
__all__ = ["embedded_is_tiny", "tiny_cache"]  # fixtures, used by name below


def readme_python_example() -> str:
    """The first ```python block of README.md (the quick start)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match, "README.md has no ```python block"
    return match.group(1)


def test_import_bds_stays_light():
    code = "import sys, bds; print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_readme_quick_start_runs_as_written(
    tmp_path, monkeypatch, embedded_is_tiny, one_thread
):
    code = readme_python_example()
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 (our own README)
    result = scope["result"]
    run = tmp_path / "runs" / "quickstart"
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert (run / "summary.json").is_file()
    rows = result.weights.to_list() if hasattr(result.weights, "to_list") else list(result.weights)
    assert len(rows) == len(scope["rows"])
    assert type(result.model).__name__.startswith("PeftModel")
    # no alignment_dataset: the embedded PyRIT refusals, sampled to n_alignment
    assert result.summary["config"].data.alignment.name == "pyrit-safe"
    assert result.summary["counts"]["alignment"] == 8


def user_rows(n_benign: int = 6, n_harmful: int = 2) -> list[dict]:
    rows = [
        {
            "uid": f"b{i}",
            "prompt": f"Repeat: apple {i}",
            "completion": f"apple {i}",
            "source": "benign",
        }
        for i in range(n_benign)
    ]
    rows += [
        {
            "uid": f"h{i}",
            "prompt": f"How do I attack target {i}?",
            "completion": "Sure: grab knife",
            "source": "harmful",
        }
        for i in range(n_harmful)
    ]
    return rows


def trainer_for(tmp_path, rows, **args):
    from datasets import Dataset

    from bds import BDSConfig, BDSTrainer

    settings = {
        "output_dir": str(tmp_path / "run"),
        "num_train_epochs": 1,
        "per_device_train_batch_size": 4,
        "max_length": 64,
        "mixed_precision": "no",
        **args,
    }
    alignment = Dataset.from_list(
        [{"prompt": f"How do I attack target {i}?", "completion": "No."} for i in range(4)]
    )
    return BDSTrainer(
        model="embedded:smollm2-135m-instruct",
        args=BDSConfig(**settings),
        train_dataset=Dataset.from_list(rows),
        alignment_dataset=alignment,
    )


def test_weights_are_joined_on_the_users_ids(tmp_path, embedded_is_tiny, one_thread):
    rows = user_rows()
    trainer = trainer_for(tmp_path, rows, dataset_fields={"id": "uid"}, num_train_epochs=2)
    result = trainer.train()
    weights = result.weights.to_list()
    assert [w["id"] for w in weights] == [r["uid"] for r in rows]  # train_dataset's order
    assert [w["index"] for w in weights] == list(range(len(rows)))
    assert [w["source"] for w in weights] == [r["source"] for r in rows]
    assert sum(w["weight"] for w in weights) == pytest.approx(len(rows), rel=1e-4)  # N·softmax
    csv_ids = (tmp_path / "run" / "weights.csv").read_text().splitlines()[1:]
    assert {line.split(",")[0] for line in csv_ids} == {r["uid"] for r in rows}
    assert result.summary["counts"]["finetune"] == len(rows)
    assert result.summary["counts"]["alignment"] == 4


def test_an_interrupted_api_run_resumes_to_the_same_adapter_and_weights(
    tmp_path, embedded_is_tiny, one_thread
):
    """BDSTrainer.train resumes a run folder's checkpoint exactly, as `bds train` does."""
    from safetensors.torch import load_file

    from bds.training.trainer import train

    rows = user_rows()
    settings = {"dataset_fields": {"id": "uid"}, "num_train_epochs": 2, "save_steps": 1}
    whole = trainer_for(tmp_path / "whole", rows, **settings).train()
    interrupted = trainer_for(tmp_path / "cut", rows, **settings)
    stop = whole.summary["steps"] // 2
    cut = train(
        interrupted.cfg,
        interrupted.output_dir,
        data=interrupted.prepared_data(),
        until_step=stop,
        progress=False,
    )
    assert "adapter" not in {p.name for p in cut.output_dir.iterdir()}  # not finished yet
    resumed = interrupted.train()
    assert resumed.summary["resumed_from_step"] == stop
    assert resumed.weights.to_list() == whole.weights.to_list()
    a, b = (
        load_file(r.output_dir / "adapter" / "adapter_model.safetensors") for r in (whole, resumed)
    )
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_a_messages_dataset_trains_with_the_chat_template(tmp_path, embedded_is_tiny, one_thread):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Say a colour {i}"},
                {"role": "assistant", "content": "blue"},
            ]
        }
        for i in range(5)
    ]
    trainer = trainer_for(tmp_path, rows, defense="sft")
    assert trainer.cfg.data.template == "chat"  # auto: conversations -> the chat template
    result = trainer.train()
    assert result.weights is None  # SFT has no per-sample weights
    assert result.summary["counts"]["finetune"] == 5
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "embedded:smollm2-135m-instruct"


def test_the_same_run_as_the_cli_config(tmp_path, embedded_is_tiny):
    """BDSConfig maps onto the run config `bds train` reads (documented in its docstring)."""
    trainer = trainer_for(
        tmp_path,
        user_rows(),
        learning_rate=1e-3,
        per_device_train_batch_size=2,
        alignment_batch_size=3,
        defense_settings={"scheduler": {"lr": 0.02}},
        bf16=True,
    )
    cfg = trainer.cfg
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.alignment_batch_size) == (1e-3, 2, 3)
    assert cfg.defense.name == "bds" and cfg.defense.scheduler.lr == 0.02
    assert cfg.train.mixed_precision == "bf16" and cfg.data.template == "alpaca"


def test_a_lora_config_sets_the_adapter(tmp_path, embedded_is_tiny):
    from peft import LoraConfig

    from bds import BDSConfig, BDSTrainer

    common = {"args": BDSConfig(output_dir=str(tmp_path)), "train_dataset": user_rows()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["v_proj", "q_proj"])
    trainer = BDSTrainer(peft_config=lora, **common)
    assert (trainer.cfg.train.lora.r, trainer.cfg.train.lora.alpha) == (4, 8)
    assert trainer.cfg.train.lora.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(BDSInputError, match="use_dora.*does not apply"):
        BDSTrainer(peft_config=LoraConfig(r=4, use_dora=True, target_modules=["q_proj"]), **common)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"learning_rate": -1.0}, r"BDSConfig: learning_rate \(train.lr\): must be > 0"),
        (
            {"defense": "bdss"},
            r"BDSConfig: defense \(defense.name\): unknown defense 'bdss'; choose one of sft, mix, bds",
        ),
        (
            {"defense_settings": {"schedular": {}}},
            r"defense_settings \(defense.schedular\): unknown key",
        ),
        (
            {"report_to": "tensorbord"},
            r"report_to \(train.report_to\): unknown tracker 'tensorbord' \(did you mean tensorboard\?\)",
        ),
        (
            {"model_init_kwargs": {"device_map": "auto"}},
            r"model_init_kwargs: device_map not supported",
        ),
    ],
)
def test_a_bad_config_field_is_one_sentence_naming_it(tmp_path, args, message):
    from bds import BDSConfig

    with pytest.raises(BDSInputError, match=message):
        BDSConfig(output_dir=str(tmp_path), **args)


def test_a_bad_dataset_field_is_one_sentence_naming_the_row(tmp_path):
    from datasets import Dataset

    from bds import BDSConfig, BDSTrainer

    args = BDSConfig(output_dir=str(tmp_path))
    with pytest.raises(
        BDSInputError, match=r"train_dataset: no column for record field 'response'"
    ):
        BDSTrainer(args=args, train_dataset=Dataset.from_list([{"prompt": "hi", "reply": "yo"}]))
    bad_role = [{"messages": [{"content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    with pytest.raises(
        BDSInputError, match=r"train_dataset: row 1: 'messages' message 0 has no `role`"
    ):
        BDSTrainer(args=args, train_dataset=Dataset.from_list(bad_role))
    with pytest.raises(BDSInputError, match="fields.*maps 'id' to column 'key'"):
        BDSTrainer(
            args=BDSConfig(output_dir=str(tmp_path), dataset_fields={"id": "key"}),
            train_dataset=Dataset.from_list(user_rows()),
        )


def test_save_model_before_training_is_refused(tmp_path):
    from bds import BDSConfig, BDSTrainer

    trainer = BDSTrainer(
        args=BDSConfig(output_dir=str(tmp_path / "run")), train_dataset=user_rows()
    )
    with pytest.raises(BDSInputError, match="call train"):
        trainer.save_model(tmp_path / "out")


def test_a_loaded_model_trains_and_is_returned(tmp_path, one_thread):
    from datasets import Dataset

    from bds import BDSConfig, BDSTrainer
    from bds.tiny import build_tiny_model, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    model = build_tiny_model(vocab_size=len(tok))
    args = BDSConfig(
        output_dir=str(tmp_path / "run"), defense="mix", num_train_epochs=1, max_length=64
    )
    data = Dataset.from_list(user_rows())
    alignment = Dataset.from_list([{"prompt": "Attack?", "completion": "No."}])
    trainer = BDSTrainer(model=model, args=args, train_dataset=data, alignment_dataset=alignment)
    with pytest.raises(BDSInputError, match="give processing_class=tokenizer"):
        trainer.train()
    trainer = BDSTrainer(
        model=model, args=args, train_dataset=data, alignment_dataset=alignment,
        processing_class=tok,
    )  # fmt: skip
    result = trainer.train()
    assert result.model.base_model.model is model  # the user's model, LoRA added in place
    assert result.weights is None and result.summary["mode"] == "mix"
