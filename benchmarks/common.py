"""What every benchmark records next to its numbers: the machine and package versions."""

from __future__ import annotations

import os
import platform
from typing import Any


def machine() -> dict[str, Any]:
    import torch

    from bds.precision import machine_record

    return {
        **machine_record(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def environment() -> dict[str, Any]:
    """The machine and the package versions, for a benchmark's protocol."""
    from bds.training.outputs import package_versions

    return {"machine": machine(), "versions": package_versions()}
