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


def refuse_sharded_parameters(accelerator: Any) -> None:
    """Refuse ZeRO-3 and FSDP until the adapter is gathered before it is saved: rank 0 would
    write (and the post-fine-tuning defenses edit) its own shard of the LoRA weights, an
    adapter that looks whole but is not."""
    from bds.errors import BDSInputError

    state = accelerator.state
    plugin = getattr(state, "deepspeed_plugin", None)
    sharded = "DeepSpeed ZeRO-3" if plugin is not None and plugin.zero_stage == 3 else None
    if getattr(state, "fsdp_plugin", None) is not None:
        sharded = "FSDP"
    if sharded:
        raise BDSInputError(
            f"{sharded} shards the adapter's parameters and bds does not gather them before "
            "saving yet, so the saved adapter would be one rank's shard; launch with "
            "configs/accelerate/deepspeed_zero2.yaml or plain DDP instead"
        )
