"""Shared set-up for trainer tests (also used by the 2-process worker)."""

from __future__ import annotations

import torch

from bds.config import RunConfig, from_dict
from bds.data.mixer import mix_finetune_set
from bds.data.pipeline import PreparedData
from bds.tiny import build_tiny_model, build_tiny_tokenizer, synthetic_conflict_task

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_config(**train) -> RunConfig:
    placeholder = {"kind": "local", "path": "given-in-memory.jsonl"}
    section = {
        "mode": "bds",
        "epochs": 2,
        "batch_size": 10,
        "alignment_batch_size": 10,
        "lr": 3e-3,
        "mixed_precision": "no",  # the same numbers on every CPU (auto would pick by machine)
        "lora": {"r": 8, "alpha": 16, "target_modules": ALL_LINEAR},
        "scheduler": {"lr": 0.05},
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
