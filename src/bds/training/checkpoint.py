"""Checkpoints that resume a run exactly: adapters, optimizers, scheduler, RNG, trajectory.

Written by hand on purpose, in a few lines: accelerate's save_state stores the full model
(base weights included: 14 GB per checkpoint for a 7B model where the LoRA adapter is MBs)
and reloads custom state with pickle (weights_only=False). Here every file is either
safetensors (adapters) or a torch file of plain tensors/numbers loaded with
weights_only=True, and a checkpoint folder appears only once complete (tmp + rename).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bds.io import atomic_directory

STATE_FILE = "state.pt"
META_FILE = "trainer_state.json"


def checkpoint_root(output_dir: Path) -> Path:
    return output_dir / "checkpoints"


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, if any."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return None
    done = [p for p in root.glob("step-*") if (p / META_FILE).is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def save_checkpoint(
    output_dir: Path, step: int, model: Any, state: dict[str, Any], meta: dict[str, Any]
) -> Path:
    """model: the PEFT model (all adapters saved); state: tensors/numbers only."""
    target = checkpoint_root(output_dir) / f"step-{step}"
    with atomic_directory(target) as tmp:
        # no vocabulary resize happens here, so PEFT need not look the base config up by name
        model.save_pretrained(tmp / "adapter", safe_serialization=True, save_embedding_layers=False)
        torch.save(state, tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps({"step": step, **meta}, indent=2), encoding="utf-8")
    return target


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta). The adapter weights are loaded by the caller from path / 'adapter'."""
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    return state, meta


def adapter_weights_file(path: Path, adapter: str) -> Path:
    """PEFT writes the default adapter at the root and the others in subfolders."""
    folder = path / "adapter" if adapter == "default" else path / "adapter" / adapter
    return folder / "adapter_model.safetensors"
