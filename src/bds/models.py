"""Base model and tokenizer from a hub id, a local folder, or the embedded default; adapters
from a folder or a hub id."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from bds.assets import EMBEDDED_PREFIX, embedded_model_dir
from bds.config import ModelConfig
from bds.errors import BDSInputError
from bds.hub import looks_like_local_path

# PEFT (0.21) reads transformers' deprecated `is_gradient_checkpointing` each time it wraps a
# model (every training run and every evaluation with an adapter): the warning says nothing
# about this code or its data, so it is not repeated to users.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")


def resolve_model_path(name: str, revision: str | None = None) -> str:
    """Embedded name -> cache folder; existing folder -> itself; else a hub id (`org/name`)."""
    if name.startswith(EMBEDDED_PREFIX):
        return str(embedded_model_dir(name[len(EMBEDDED_PREFIX) :]))
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BDSInputError(f"model.name: {name} is not a model folder (no config.json in it)")
        return str(path)
    if looks_like_local_path(name):
        raise BDSInputError(
            f"model.name: {name} is neither an existing folder nor a hub id like org/name; "
            "fix the path or use embedded:smollm2-135m-instruct"
        )
    from bds.hub import check_hub_model

    check_hub_model(name, revision)
    return name


def load_tokenizer(cfg: ModelConfig, padding_side: str = "right") -> Any:
    path = resolve_model_path(cfg.name, cfg.revision)
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, path, cfg)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_model(cfg: ModelConfig) -> Any:
    path = resolve_model_path(cfg.name, cfg.revision)  # fail on a bad path before the slow imports
    import torch
    from transformers import AutoModelForCausalLM

    if cfg.load_in_4bit:  # QLoRA (bds/quantization.py)
        from bds.quantization import four_bit_kwargs, prepare_for_training

        model = _from_pretrained(AutoModelForCausalLM, path, cfg, **four_bit_kwargs(cfg.dtype))
        model = prepare_for_training(model)
    else:
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        model = _from_pretrained(AutoModelForCausalLM, path, cfg, dtype=dtype)
    # PEFT writes this into adapter_config.json as the adapter's base model: the name a user
    # can load (the embedded name, a hub id), not this machine's cache folder.
    model.name_or_path = cfg.name if cfg.name.startswith(EMBEDDED_PREFIX) else path
    return model


def resolve_adapter(adapter: str, what: str = "eval.adapter") -> str:
    """A PEFT adapter's local folder: the folder itself, or a hub repo id fetched (adapter
    config and safetensors weights only, never pickles) into the hub cache."""
    path = Path(adapter).expanduser()
    if path.exists() or looks_like_local_path(adapter) or "/" not in adapter:  # org/name only
        if not (path / "adapter_config.json").is_file():
            raise BDSInputError(
                f"{what}: {adapter} is not a PEFT adapter folder (no adapter_config.json); "
                "point it at the adapter a training run saved, or give a hub id like org/name"
            )
        return str(path)
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(
            adapter, allow_patterns=["adapter_config.json", "*.safetensors", "*.md"]
        )
    except Exception as exc:  # not found, gated, offline and not cached, timeout
        first = re.split(r"\.\s", str(exc).strip(), maxsplit=1)[0].splitlines()[0][:200]
        raise BDSInputError(
            f"{what}: {adapter} is no local folder, and the hub adapter of that id could not "
            f"be fetched ({type(exc).__name__}: {first}); check the id, connect (unset "
            "HF_HUB_OFFLINE), or give the adapter's folder"
        ) from None
    if not (Path(folder) / "adapter_config.json").is_file():
        raise BDSInputError(
            f"{what}: the hub repo {adapter} holds no adapter_config.json (with safetensors "
            "weights); give a PEFT adapter repo"
        )
    return folder


def _from_pretrained(cls: Any, path: str, cfg: ModelConfig, **kwargs: Any) -> Any:
    try:
        return cls.from_pretrained(
            path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, **kwargs
        )
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BDSInputError(
            f"model.name: could not load {cfg.name} ({first}); check the id or path, "
            "or log in to the hub with HF_HUB_OFFLINE unset"
        ) from None
