"""What a distributed launch (accelerate's DeepSpeed / FSDP configs) needs from the trainer.

DeepSpeed sizes its engine from the per-device batch, which accelerate reads off a
dataloader given to `prepare()`. The trainer draws its batches itself (batching.py: a
pure function of seed and step, for exact resume), so it tells DeepSpeed the size here.
"""

from __future__ import annotations

from typing import Any


def fit_deepspeed_batch(accelerator: Any, batch_size: int) -> None:
    """Set DeepSpeed's per-device batch (global `batch_size` / processes) unless the user's
    DeepSpeed config fixed it; nothing without DeepSpeed."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    config = plugin.deepspeed_config
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = batch_size // accelerator.num_processes
