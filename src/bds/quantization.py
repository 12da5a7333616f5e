"""QLoRA: the base model loaded in 4 bits (bitsandbytes NF4) on CUDA, LoRA trained on top.

`model.load_in_4bit: true` asks for it. The config checks that bitsandbytes is installed
when it loads (without importing it or torch); loading the model checks for a CUDA GPU,
since bitsandbytes' 4-bit kernels need one. The settings are the QLoRA paper's (Dettmers
et al. 2023): NF4 weights, double quantisation, bf16 compute where the GPU has it.
"""

from __future__ import annotations

import os
from typing import Any

from bds.errors import BDSInputError, FieldError

PACKAGE = "bitsandbytes"


def _installed() -> bool:
    from importlib.util import find_spec

    return find_spec(PACKAGE) is not None


def check_installed() -> None:
    """FieldError on `load_in_4bit` when bitsandbytes is missing (the config loader's hook)."""
    if not _installed():
        raise FieldError(
            "load_in_4bit",
            "needs bitsandbytes and a CUDA GPU (pip install bitsandbytes); remove it to "
            "train on the full-precision base model",
        )


def four_bit_kwargs(dtype: str) -> dict[str, Any]:
    """from_pretrained keyword arguments that load the base in 4 bits on this process's GPU.

    dtype: model.dtype; float16 / bfloat16 are the compute dtype, anything else picks bf16
    where the GPU computes it, else fp16."""
    import torch

    if not torch.cuda.is_available():
        raise BDSInputError(
            "model.load_in_4bit: 4-bit loading (bitsandbytes) needs a CUDA GPU and none is "
            "visible here; remove it, or run on a machine with one"
        )
    from transformers import BitsAndBytesConfig

    if dtype in ("bfloat16", "float16"):
        compute = getattr(torch, dtype)
    else:
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))  # each process its own GPU
    return {"quantization_config": quant, "dtype": compute, "device_map": {"": local_rank}}


def prepare_for_training(model: Any) -> Any:
    """PEFT's preparation of a k-bit model: frozen base, norms and head in fp32. Gradient
    checkpointing stays with train.gradient_checkpointing (the trainer turns it on)."""
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
