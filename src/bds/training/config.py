"""The `train:` section of a run config."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from bds.errors import FieldError

_TO_DEFENSE = "moved to the top-level `defense:` section (e.g. defense: {name: bds, %s})"

# Trackers accelerate logs to (its LoggerType; tests/test_trackers.py keeps the two in
# step) -> the packages that provide them (any one will do). Checked with find_spec, so
# loading a config stays free of torch and of the trackers themselves.
TRACKERS: dict[str, tuple[str, ...]] = {
    "tensorboard": ("tensorboard", "tensorboardX"),
    "wandb": ("wandb",),
    "trackio": ("trackio",),
    "comet_ml": ("comet_ml",),
    "mlflow": ("mlflow",),
    "aim": ("aim",),
    "clearml": ("clearml",),
    "dvclive": ("dvclive",),
    "swanlab": ("swanlab",),
}


@dataclass
class LoraSettings:
    """LoRA through PEFT. Reference protocol: r=32, alpha=4 on q/k/v (with lr 1e-5, 20 epochs)."""

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj"])

    def validate(self) -> None:
        if self.r < 1:
            raise FieldError("r", f"must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise FieldError("dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass
class TrainConfig:
    """How D_ft (and D_safe) are fine-tuned, whatever the defense (`defense:` picks it).

    Batch sizes are global (summed over processes); each step takes one user batch and,
    where the defense reads D_safe (bds, mix, lisa...), one alignment batch.
    report_to: experiment trackers that receive the whole config at the start and the
    train_log.jsonl records every log_steps (through accelerate): any of tensorboard,
    wandb, trackio, comet_ml, mlflow, aim, clearml, dvclive, swanlab, or `all` (every one
    installed); a name or a list. Each must be installed (`pip install wandb`); the run's
    folder is their logging directory. Empty (default): no tracker.
    """

    # keys of earlier versions -> where they are now (a config naming them is told)
    moved_keys: ClassVar[dict[str, str]] = {
        "mode": "moved to the top-level `defense:` section: defense: {name: bds} "
        "(or sft, mix, bds-no-align, bds-neural, lisa, ...)",
        **{
            key: _TO_DEFENSE % f"{key}: ..."
            for key in (
                "scheduler",
                "drive",
                "conflict_window",
                "safety_agnostic",
                "reference_weights",
                "scheduler_losses",
            )
        },
    }

    epochs: float = 2.0
    max_steps: int | None = None
    batch_size: int = 8
    alignment_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.1
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    warmup_steps: int = 0
    # auto: bf16 where the hardware computes it natively (CUDA with bf16, a CPU with AMX or
    # AVX512-BF16), fp16 on CUDA without bf16, fp32 otherwise (bds/precision.py says why)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    # transformers' attn_implementation while training (null: the model's own, usually
    # sdpa). On a 2-core CPU, eager ran the demo's 128-token steps ~15 % faster than sdpa,
    # whose CPU backward is slow; generation keeps the model's own.
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2", "flex_attention"] | None = (
        None
    )
    one_pass: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)
    log_steps: int = 10
    trajectory_steps: int = 10
    save_steps: int | None = None
    report_to: list[str] | str = field(default_factory=list)
    seed: int = 42

    def validate(self) -> None:
        for key in (
            "batch_size",
            "alignment_batch_size",
            "gradient_accumulation_steps",
            "log_steps",
            "trajectory_steps",
        ):
            if getattr(self, key) < 1:
                raise FieldError(key, f"must be >= 1, got {getattr(self, key)}")
        if self.epochs <= 0 and self.max_steps is None:
            raise FieldError("epochs", f"must be > 0 (or set max_steps), got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise FieldError("max_steps", f"must be >= 1, got {self.max_steps}")
        if self.save_steps is not None and self.save_steps < 1:
            raise FieldError("save_steps", f"must be >= 1, got {self.save_steps}")
        if self.lr <= 0:
            raise FieldError("lr", f"must be > 0, got {self.lr}")
        self.report_to = check_trackers(self.report_to)


def check_trackers(report_to: object) -> list[str]:
    """`report_to` as a list of known, installed trackers; FieldError naming the first
    that is neither."""
    from importlib.util import find_spec

    names = [report_to] if isinstance(report_to, str) else report_to
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise FieldError(
            "report_to", f"must be a tracker name or a list of them, got {report_to!r}"
        )
    for name in names:
        if name == "all":
            continue
        if name not in TRACKERS:
            import difflib

            near = difflib.get_close_matches(name, TRACKERS, n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise FieldError(
                "report_to",
                f"unknown tracker {name!r}{hint}; choose from {', '.join(TRACKERS)} or all",
            )
        if not any(find_spec(package) for package in TRACKERS[name]):
            raise FieldError(
                "report_to",
                f"{name} is not installed; pip install {TRACKERS[name][0]}, or remove it",
            )
    return list(names)
