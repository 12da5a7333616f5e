"""Loading hub judge checkpoints (beaver-dam, llama-guard) with bds's error handling."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bds.errors import BDSInputError

if TYPE_CHECKING:
    from bds.config import ModelConfig
    from bds.eval.config import JudgeConfig


def _model_config(cfg: JudgeConfig) -> ModelConfig:
    from bds.config import ModelConfig

    # trust_remote_code stays off: both judges are plain Llama classes.
    return ModelConfig(name=cfg.model_name() or "", dtype=cfg.dtype, revision=cfg.revision)


def load_judge_tokenizer(cfg: JudgeConfig, padding_side: str) -> Any:
    """The judge's tokenizer, with a pad token (EOS if it has none) on `padding_side`."""
    from bds.models import load_tokenizer

    with _named(cfg):
        return load_tokenizer(_model_config(cfg), padding_side=padding_side)


def load_judge_model(auto_cls: Any, cfg: JudgeConfig, device: str | None = None) -> Any:
    """`auto_cls.from_pretrained` of the judge checkpoint; a failure is a BDSInputError."""
    import torch

    from bds.models import _from_pretrained, resolve_model_path

    mcfg = _model_config(cfg)
    if cfg.dtype == "auto":
        # bf16 where a GPU runs it, fp32 on CPU (bf16 matmuls are slow on most CPUs).
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    else:
        dtype = getattr(torch, cfg.dtype)
    with _named(cfg):
        model = _from_pretrained(auto_cls, resolve_model_path(mcfg.name), mcfg, dtype=dtype)
    if device is not None:
        model.to(device)
    return model.eval()


@contextmanager
def _named(cfg: JudgeConfig) -> Iterator[None]:
    # bds.models names the run's `model.name`; say which judge setting failed instead.
    try:
        yield
    except BDSInputError as exc:
        message = str(exc).removeprefix("model.name: ")
        raise BDSInputError(f"eval.judges ({cfg.name}) model: {message}") from None
