"""Build the configured scheduler for the user samples a run trains on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bds.data.schema import Record
from bds.schedulers.config import SchedulerConfig


def build_scheduler(
    cfg: SchedulerConfig, sample_ids: Sequence[str], records: Sequence[Record], device: Any = "cpu"
) -> Any:
    """A ScalarScheduler or NeuralScheduler over the samples `sample_ids`, in that order
    (the neural one reads each sample's text from its record and runs its encoder on
    `device`; the scalar one's O(N) logits stay on the CPU)."""
    if cfg.kind == "neural":
        from bds.schedulers.encoder import sample_text
        from bds.schedulers.neural import NeuralScheduler

        by_id = {r.id: r for r in records}
        return NeuralScheduler([sample_text(by_id[i]) for i in sample_ids], cfg).to(device)
    from bds.schedulers.scalar import ScalarScheduler

    return ScalarScheduler(len(sample_ids), cfg)
