"""`auto` precision: bf16 only where it is native, and the choice is recorded with its reason."""

import pytest

from bds import precision


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(precision, "_cuda_bf16", lambda: None)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)


def _flags(monkeypatch, *flags):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"sse2", "avx2", *flags}))


def test_avx2_cpu_trains_and_generates_in_fp32(cpu_only, monkeypatch):
    _flags(monkeypatch)
    used, why = precision.resolve_mixed_precision("auto")
    assert used == "no" and "emulated" in why
    assert precision.resolve_generation_dtype("auto")[0] == "float32"


@pytest.mark.parametrize("flag", ["amx_bf16", "avx512_bf16"])
def test_native_bf16_cpu_uses_bf16(cpu_only, monkeypatch, flag):
    _flags(monkeypatch, "avx512f", flag)
    assert precision.resolve_mixed_precision("auto") == (
        "bf16",
        f"auto: CPU has {flag} (native bf16)",
    )
    assert precision.resolve_generation_dtype("auto")[0] == "bfloat16"


@pytest.mark.parametrize("var", ["ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"])
def test_isa_cap_below_bf16_turns_auto_to_fp32(cpu_only, monkeypatch, var):
    _flags(monkeypatch, "amx_bf16")
    monkeypatch.setenv(var, "AVX2")
    used, why = precision.resolve_mixed_precision("auto")
    assert used == "no" and var in why


@pytest.mark.parametrize("cuda_bf16,expected", [(True, "bf16"), (False, "fp16")])
def test_cuda_picks_bf16_or_fp16(monkeypatch, cuda_bf16, expected):
    monkeypatch.setattr(precision, "_cuda_bf16", lambda: cuda_bf16)
    assert precision.resolve_mixed_precision("auto")[0] == expected


def test_an_explicit_setting_is_kept(cpu_only, monkeypatch):
    _flags(monkeypatch)
    assert precision.resolve_mixed_precision("bf16") == ("bf16", "set in the config")
    assert precision.resolve_generation_dtype("float16") == ("float16", "set in the config")


def test_machine_record_names_cpu_and_capability():
    record = precision.machine_record()
    assert record["cpu_model"] and record["torch_cpu_capability"]
    assert isinstance(record["cpu_bf16_native"], bool)
