"""`BDSConfig`: the Python API's training arguments, named as TRL's SFTConfig names them.

It is a front for the run config the CLI reads (bds/config.py): `to_run_config` maps each
field onto its `RunConfig` key and validates the result exactly as a YAML file would be,
so a bad value is the same one sentence, naming the BDSConfig field.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from bds.errors import ConfigError

# BDSConfig field -> the RunConfig key it sets (for messages; see to_run_config).
FIELD_KEYS = {
    "defense": "defense.name",
    "defense_settings": "defense",
    "num_train_epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "learning_rate": "train.lr",
    "per_device_train_batch_size": "train.batch_size",
    "alignment_batch_size": "train.alignment_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "weight_decay": "train.weight_decay",
    "lr_scheduler_type": "train.lr_schedule",
    "warmup_steps": "train.warmup_steps",
    "mixed_precision": "train.mixed_precision",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "attn_implementation": "train.attn_implementation",
    "logging_steps": "train.log_steps",
    "save_steps": "train.save_steps",
    "report_to": "train.report_to",
    "seed": "train.seed",
    "max_length": "data.max_length",
    "truncation": "data.truncation",
    "template": "data.template",
    "n_alignment": "data.n_alignment",
    "model_init_kwargs": "model",
}
_MODEL_KEYS = {"dtype", "torch_dtype", "revision", "trust_remote_code", "load_in_4bit"}


@dataclass
class BDSConfig:
    """Training arguments of `BDSTrainer`; every field maps onto the run config of `bds train`.

    | BDSConfig | run config (YAML) | default |
    | --- | --- | --- |
    | output_dir | the run folder (`bds train -o`) | required |
    | defense | defense.name (bds, bds-neural, mix, sft, lisa, ...) | bds |
    | defense_settings | the defense's own settings, e.g. {"scheduler": {"lr": 0.05}} | {} |
    | num_train_epochs | train.epochs | 2.0 |
    | max_steps | train.max_steps (<= 0: from the epochs) | -1 |
    | learning_rate | train.lr | 2e-4 |
    | per_device_train_batch_size | train.batch_size (global: times WORLD_SIZE) | 8 |
    | alignment_batch_size | train.alignment_batch_size (per device) | the user batch's |
    | gradient_accumulation_steps | train.gradient_accumulation_steps | 1 |
    | weight_decay | train.weight_decay | 0.1 |
    | lr_scheduler_type | train.lr_schedule (constant, linear, cosine) | constant |
    | warmup_steps | train.warmup_steps | 0 |
    | bf16 / fp16 / mixed_precision | train.mixed_precision (bf16 / fp16 win over it) | auto |
    | gradient_checkpointing | train.gradient_checkpointing | False |
    | attn_implementation | train.attn_implementation | the model's |
    | logging_steps | train.log_steps (train_log.jsonl, trackers) | 10 |
    | save_steps | train.save_steps (checkpoints for an exact resume; <= 0: none) | None |
    | report_to | train.report_to ("none": no tracker) | [] |
    | seed | train.seed | 42 |
    | max_length | data.max_length (tokens; longer samples truncated or dropped, counted) | 256 |
    | truncation | data.truncation (truncate, drop) | truncate |
    | template | data.template; auto: chat when the data holds conversations, else alpaca | auto |
    | n_alignment | data.n_alignment (a seeded sample of the alignment set) | all |
    | dataset_fields | `fields:` of the user source (record field -> column) | {} |
    | dataset_label | `label:` of the user rows without a `source` column | None (unknown) |
    | model_init_kwargs | model.dtype / revision / trust_remote_code / load_in_4bit (QLoRA) | {} |

    The LoRA settings come from `BDSTrainer(peft_config=LoraConfig(...))`. An unknown
    defense name, or a value out of range, raises ConfigError (a BDSInputError) naming the
    field, when the config is made.
    """

    output_dir: str
    defense: str = "bds"
    defense_settings: dict[str, Any] = field(default_factory=dict)
    num_train_epochs: float = 2.0
    max_steps: int = -1
    learning_rate: float = 2e-4
    per_device_train_batch_size: int = 8
    alignment_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    weight_decay: float = 0.1
    lr_scheduler_type: str = "constant"
    warmup_steps: int = 0
    bf16: bool = False
    fp16: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    logging_steps: int = 10
    save_steps: int | None = None
    report_to: str | list[str] = field(default_factory=list)
    seed: int = 42
    max_length: int = 256
    truncation: Literal["truncate", "drop"] = "truncate"
    template: Literal["auto", "alpaca", "chat"] = "auto"
    n_alignment: int | None = None
    dataset_fields: dict[str, str] = field(default_factory=dict)
    dataset_label: str | None = None
    model_init_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.to_run_config()  # a bad value fails here, as TRL's configs do

    def to_run_config(
        self,
        model_name: str = "embedded:smollm2-135m-instruct",
        user_source: str = "datasets.Dataset (train_dataset)",
        alignment: dict[str, Any] | None = None,
        n: int = 1,
        conversational: bool = False,
    ) -> Any:
        """The validated `RunConfig` for this run.

        user_source: what the user data is, recorded as the benign source's path (the
        records themselves are given to the trainer); alignment: the alignment source's
        mapping (default: embedded pyrit-safe); n: the number of user samples."""
        from bds.config import RunConfig, from_dict

        data = {
            "model": self._model_section(model_name),
            "data": {
                "benign": {"kind": "local", "path": user_source},
                "alignment": alignment or {"kind": "embedded", "name": "pyrit-safe"},
                "n": n,
                "harmful_ratio": 0.0,
                "max_length": self.max_length,
                "truncation": self.truncation,
                "template": _template(self.template, conversational),
                "n_alignment": self.n_alignment,
                "seed": self.seed,
            },
            "defense": {**self.defense_settings, "name": self.defense},
            "train": self._train_section(),
        }
        try:
            return from_dict(RunConfig, data, source="BDSConfig")
        except ConfigError as exc:
            raise ConfigError(_name_field(str(exc))) from None

    def _train_section(self) -> dict[str, Any]:
        world = int(os.environ.get("WORLD_SIZE", "1"))  # batch sizes in the run config are global
        per_device_align = self.alignment_batch_size or self.per_device_train_batch_size
        report_to = [] if self.report_to in ("none", ["none"]) else self.report_to
        precision = "bf16" if self.bf16 else "fp16" if self.fp16 else self.mixed_precision
        return {
            "epochs": self.num_train_epochs,
            "max_steps": self.max_steps if self.max_steps > 0 else None,
            "batch_size": self.per_device_train_batch_size * world,
            "alignment_batch_size": per_device_align * world,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "lr": self.learning_rate,
            "weight_decay": self.weight_decay,
            "lr_schedule": self.lr_scheduler_type,
            "warmup_steps": self.warmup_steps,
            "mixed_precision": precision,
            "gradient_checkpointing": self.gradient_checkpointing,
            "attn_implementation": self.attn_implementation,
            "log_steps": self.logging_steps,
            "trajectory_steps": self.logging_steps,
            "save_steps": self.save_steps if self.save_steps and self.save_steps > 0 else None,
            "report_to": report_to,
            "seed": self.seed,
        }

    def _model_section(self, model_name: str) -> dict[str, Any]:
        kwargs = dict(self.model_init_kwargs)
        unknown = sorted(set(kwargs) - _MODEL_KEYS)
        if unknown:
            raise ConfigError(
                f"BDSConfig: model_init_kwargs: {', '.join(unknown)} not supported; give "
                f"{', '.join(sorted(_MODEL_KEYS))}, or load the model yourself and pass it"
            )
        if "torch_dtype" in kwargs:  # transformers' older name
            kwargs["dtype"] = kwargs.pop("torch_dtype")
        dtype = kwargs.get("dtype")
        if dtype is not None and not isinstance(dtype, str):  # torch.bfloat16 -> "bfloat16"
            kwargs["dtype"] = str(dtype).removeprefix("torch.")
        return {"name": model_name, **kwargs}


def _template(template: str, conversational: bool) -> str:
    if template != "auto":
        return template
    return "chat" if conversational else "alpaca"


def _name_field(message: str) -> str:
    """A run-config error as the BDSConfig field that set the key ("train.lr" ->
    "learning_rate (train.lr)")."""
    match = re.match(r"^BDSConfig: ([\w.\-]+): (.*)$", message, re.S)
    if not match:
        return message
    key, problem = match.groups()
    best = max(
        (f for f, k in FIELD_KEYS.items() if key == k or key.startswith(k + ".")),
        key=lambda f: len(FIELD_KEYS[f]),
        default=None,
    )
    named = f"{best} ({key})" if best else key
    return f"BDSConfig: {named}: {problem}"
