"""Shared set-up for trainer tests (also used by the 2-process worker)."""

from __future__ import annotations

import dataclasses

import torch

from bds.config import RunConfig, from_dict
from bds.data.mixer import mix_finetune_set
from bds.data.pipeline import PreparedData
from bds.defenses.bds import BDSSettings
from bds.tiny import build_tiny_model, build_tiny_tokenizer, synthetic_conflict_task

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# BDS's settings, given to make_config beside the train section's for brevity
BDS_KEYS = [f.name for f in dataclasses.fields(BDSSettings) if f.name != "name"]


def make_config(defense: str | dict = "bds", **train) -> RunConfig:
    """The tiny run's config: `defense` a name or a {name: ..., setting: ...} mapping
    (BDS's own settings may also be passed as keywords, e.g. drive="conflict")."""
    placeholder = {"kind": "local", "path": "given-in-memory.jsonl"}
    chosen = {"name": defense} if isinstance(defense, str) else dict(defense)
    if chosen["name"].startswith("bds"):
        chosen = {"scheduler": {"lr": 0.05}, **chosen}
        for key in BDS_KEYS:
            if key in train:
                value = train.pop(key)
                merge = isinstance(value, dict) and isinstance(chosen.get(key), dict)
                chosen[key] = {**chosen[key], **value} if merge else value
    section = {
        "epochs": 2,
        "batch_size": 10,
        "alignment_batch_size": 10,
        "lr": 3e-3,
        "mixed_precision": "no",  # the same numbers on every CPU (auto would pick by machine)
        "lora": {"r": 8, "alpha": 16, "target_modules": ALL_LINEAR},
        "log_steps": 5,
        "trajectory_steps": 5,
    }
    for key, value in train.items():
        if isinstance(value, dict) and isinstance(section.get(key), dict):
            section[key] = {**section[key], **value}
        else:
            section[key] = value
    return from_dict(
        RunConfig,
        {
            "data": {
                "benign": placeholder,
                "harmful": placeholder,
                "harmful_ratio": 0.2,
                "max_length": 64,
            },
            "defense": chosen,
            "train": section,
        },
    )


def make_data(n: int = 100, p: float = 0.2) -> PreparedData:
    benign, harmful, safe = synthetic_conflict_task()
    mix = mix_finetune_set(benign, harmful, n, p, seed=0)
    return PreparedData(mix.records, safe, mix)


def make_model_and_tokenizer():
    torch.set_num_threads(1)
    tok = build_tiny_tokenizer()
    return build_tiny_model("llama", vocab_size=len(tok), seed=0), tok


def train_tiny(out, defense="bds", data=None, until_step=None, **train_kw):
    """Train the tiny model on the synthetic task into `out`; returns (result, log lines)."""
    import json

    from bds.training.trainer import train

    model, tok = make_model_and_tokenizer()
    cfg = make_config(defense, **train_kw)
    data = data or make_data()
    result = train(cfg, out, model=model, tokenizer=tok, data=data, until_step=until_step,
                   progress=False)  # fmt: skip
    log_file = out / "train_log.jsonl"
    log = [json.loads(x) for x in log_file.read_text().splitlines()] if log_file.exists() else []
    return result, log


def adapter_weights(folder):
    """The saved adapter's tensors (a run's adapter/ or a checkpoint's)."""
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


def align_tiny(out, settings: dict, data=None, **train_kw):
    """train_tiny with an alignment-stage defense, as bds/align.py runs it (the run's
    `defense` is the alignment one; RunConfig alone would refuse it as a fine-tuning one)."""
    import json

    from bds.defenses.registry import DefenseSettings
    from bds.training.trainer import train

    model, tok = make_model_and_tokenizer()
    cfg = make_config("sft", **train_kw)
    cfg.defense = from_dict(DefenseSettings, settings)
    data = data or make_data()
    result = train(cfg, out, model=model, tokenizer=tok, data=data, progress=False)
    log_file = out / "train_log.jsonl"
    log = [json.loads(x) for x in log_file.read_text().splitlines()] if log_file.exists() else []
    return result, log


def write_harmful_pool(folder, answer: str) -> dict:
    """A local harmful pool (12 prompts apart from the tiny task's attack prompts, one
    answer), as the source mapping a defense's `harmful` setting takes."""
    import json

    from bds.data.schema import Record

    records = [
        Record(f"pool/{i}", f"How do I hurt person {i}?", answer, source="harmful")
        for i in range(12)
    ]
    path = folder / "pool.jsonl"
    path.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in records))
    return {"kind": "local", "path": str(path)}


def align_beside_sft(tmp_path, variants: dict[str, dict], **train_kw) -> dict:
    """align_tiny runs of plain SFT and of each named alignment-defense setting:
    {label: (adapter weights, log lines)}, "sft" included."""
    runs = {}
    for label, settings in {"sft": {"name": "sft"}, **variants}.items():
        result, log = align_tiny(tmp_path / label, settings, **train_kw)
        runs[label] = (adapter_weights(result.output_dir / "adapter"), log)
    return runs


def same_weights(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)
