"""QLoRA (`model.load_in_4bit: true`): without bitsandbytes the config is refused when it
loads, without a CUDA GPU the model load is refused, each in one sentence. No GPU here, so
the 4-bit load itself is checked by benchmarks/device_check.py on a GPU machine."""

from __future__ import annotations

import pytest
from test_cli_bad_input import assert_bad_input, config_text, run_cli, sources, write_config

import bds.quantization
from bds.config import ModelConfig, RunConfig, from_dict
from bds.errors import BDSInputError, ConfigError

__all__ = ["sources"]  # the fixture, used by name below
DATA = {"benign": {"kind": "local", "path": "x.jsonl"}, "harmful_ratio": 0.0}


def test_without_bitsandbytes_the_config_is_refused(monkeypatch):
    monkeypatch.setattr(bds.quantization, "_installed", lambda: False)
    with pytest.raises(ConfigError, match=r"model.load_in_4bit: needs bitsandbytes and a CUDA GPU"):
        from_dict(RunConfig, {"data": DATA, "model": {"load_in_4bit": True}})
    assert not from_dict(RunConfig, {"data": DATA}).model.load_in_4bit  # off by default


def test_bds_train_without_bitsandbytes_is_one_sentence(capsys, monkeypatch, tmp_path, sources):
    monkeypatch.setattr(bds.quantization, "_installed", lambda: False)
    cfg = write_config(tmp_path, config_text(sources["benign"], sources["harmful"]))
    result = run_cli(
        capsys, "train", "-c", str(cfg), "-o", str(tmp_path / "r"), "model.load_in_4bit=true"
    )
    assert_bad_input(result, "override model.load_in_4bit=true", "pip install bitsandbytes")


def test_the_python_api_names_its_field(monkeypatch, tmp_path):
    from bds import BDSConfig

    monkeypatch.setattr(bds.quantization, "_installed", lambda: False)
    with pytest.raises(
        BDSInputError, match=r"model_init_kwargs \(model.load_in_4bit\): needs bitsandbytes"
    ):
        BDSConfig(output_dir=str(tmp_path), model_init_kwargs={"load_in_4bit": True})


def test_without_cuda_the_model_load_is_refused(monkeypatch, tmp_path):
    import torch

    from bds.models import load_model
    from bds.tiny import save_tiny_checkpoint

    monkeypatch.setattr(bds.quantization, "_installed", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = save_tiny_checkpoint(tmp_path / "tiny")
    cfg = from_dict(ModelConfig, {"name": str(folder), "load_in_4bit": True})
    with pytest.raises(
        BDSInputError, match=r"model.load_in_4bit: 4-bit loading .* needs a CUDA GPU"
    ):
        load_model(cfg)


def test_on_cuda_the_base_is_loaded_in_nf4_on_this_process_gpu(monkeypatch):
    """The from_pretrained arguments (the load itself needs a GPU: device_check.py)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    kwargs = bds.quantization.four_bit_kwargs("float32")
    quant = kwargs["quantization_config"]
    assert (
        quant.load_in_4bit
        and quant.bnb_4bit_quant_type == "nf4"
        and quant.bnb_4bit_use_double_quant
    )
    assert quant.bnb_4bit_compute_dtype == torch.bfloat16 == kwargs["dtype"]
    assert kwargs["device_map"] == {"": 3}
    assert bds.quantization.four_bit_kwargs("float16")["dtype"] == torch.float16
