"""The machine a measurement ran on, recorded beside every benchmark's and bench's numbers."""

from __future__ import annotations

import os
import platform
from typing import Any


def machine() -> dict[str, Any]:
    """CPU model, torch's CPU capability and bf16 support, platform, CPUs, threads, GPU."""
    import torch

    from bds.precision import machine_record

    return {
        **machine_record(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
