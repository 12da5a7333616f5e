"""`auto` precision: bf16 only where the hardware computes it natively.

On a CPU without AMX or AVX512-BF16, PyTorch and oneDNN emulate bf16 matmuls: measured on a
2-core AMD EPYC with AVX2 only, a 512x576x1536 matmul ran 28x slower in bf16 than in fp32,
and the demo's alignment step took 132.7 s instead of ~15-20 s. So `auto` means:
  CUDA with bf16 -> bf16; CUDA without -> fp16; CPU with AMX / AVX512-BF16 -> bf16;
  anything else -> fp32.
`ATEN_CPU_CAPABILITY` and `ONEDNN_MAX_CPU_ISA` below the bf16 level (e.g. avx2) make a
bf16-capable CPU behave as an AVX2 one, and `auto` follows them.

Each resolver returns the choice and a one-line reason, which summary.json and
results.json record next to it.
"""

from __future__ import annotations

import os
from functools import cache

# ISA names (oneDNN's ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY) that stop below native bf16.
_CAPPED_BELOW_BF16 = {
    "sse41",
    "avx",
    "avx2",
    "avx2_vnni",
    "avx2_vnni_2",
    "avx512_core",
    "avx512_core_vnni",
    "avx512",
    "default",
}
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@cache
def _cpuinfo(field: str) -> str | None:
    """The first `field` line's value in /proc/cpuinfo (None where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    import platform

    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> frozenset[str]:
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_capability() -> str:
    """torch's CPU kernel level (DEFAULT, AVX2, AVX512, ...) as this process runs it."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def cpu_bf16_native() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and why (or why not)."""
    for var in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        value = os.environ.get(var, "").strip().lower()
        if value in _CAPPED_BELOW_BF16:
            return False, f"{var}={value} caps the CPU below native bf16"
    flags = _cpu_flags()
    found = [f for f in _BF16_CPU_FLAGS if f in flags]
    if found:
        return True, f"CPU has {'/'.join(found)} (native bf16)"
    if flags:
        return False, "CPU has no AMX or AVX512-BF16: bf16 would be emulated (~28x slower)"
    # No /proc/cpuinfo (macOS, Windows): oneDNN's own answer, which is True on any AVX512.
    import torch

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return native, f"oneDNN reports bf16 {'supported' if native else 'unsupported'}"


def _cuda_bf16() -> bool | None:
    """None without CUDA, else whether the GPU has bf16."""
    import torch

    if not torch.cuda.is_available():
        return None
    return bool(torch.cuda.is_bf16_supported())


def resolve_mixed_precision(setting: str) -> tuple[str, str]:
    """accelerate's mixed_precision ('no', 'bf16', 'fp16') for a config value, with the reason."""
    if setting != "auto":
        return setting, "set in the config"
    cuda = _cuda_bf16()
    if cuda is True:
        return "bf16", "auto: CUDA device with bf16"
    if cuda is False:
        return "fp16", "auto: CUDA device without bf16"
    native, why = cpu_bf16_native()
    return ("bf16" if native else "no"), f"auto: {why}"


_TORCH_DTYPE = {"bf16": "bfloat16", "fp16": "float16", "no": "float32"}


def resolve_generation_dtype(setting: str) -> tuple[str, str]:
    """A model dtype name (float32, bfloat16, float16) for eval.dtype = `setting`."""
    if setting != "auto":
        return setting, "set in the config"
    mixed, why = resolve_mixed_precision("auto")
    return _TORCH_DTYPE[mixed], why


def machine_record() -> dict[str, str]:
    """CPU model and torch's CPU capability, for every benchmark's machine record."""
    native, why = cpu_bf16_native()
    return {
        "cpu_model": cpu_model(),
        "torch_cpu_capability": cpu_capability(),
        "cpu_bf16_native": native,
        "cpu_bf16_reason": why,
    }
