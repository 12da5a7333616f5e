"""The harmful pool: (harmful prompt, harmful answer) samples a defense trains against.

Booster and RepNoise read harmful data at the alignment stage. For a fair comparison the
pool is disjoint from the attack (the user's harmful samples) and from the evaluation
prompts: the default, the embedded `manyshot-harmful` source, is built that way (see
bds/data/embedded.py), and `check_disjoint` refuses a pool that shares a prompt with the
user's data. Batches are a pure function of (seed, step), like the trainer's.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from bds.errors import BDSInputError

DEFAULT_POOL = {"kind": "embedded", "name": "manyshot-harmful"}


def default_pool_field() -> Any:
    """A settings field holding the pool's source (embedded manyshot-harmful by default)."""
    from bds.config import SourceConfig

    return field(default_factory=lambda: SourceConfig(**DEFAULT_POOL))


def load_pool(source: Any) -> list[Any]:
    """The pool's records (a SourceConfig in, records out); refused when empty."""
    from bds.data.sources import load_source

    loaded = load_source(source)
    records = [r for r in loaded.records if r.response.strip()]
    if not records:
        raise BDSInputError(
            f"defense harmful: the source {loaded.name} holds no (prompt, answer) records; "
            "give a harmful pool with answers"
        )
    return records


def check_disjoint(pool: list[Any], others: list[Any], what: str) -> None:
    """Refuse a pool that shares a prompt (normalised text) with `others` (named `what`)."""
    from bds.data.text import normalize

    taken = {normalize(r.instruction + " " + r.input) for r in others}
    shared = [r for r in pool if normalize(r.instruction + " " + r.input) in taken]
    if shared:
        raise BDSInputError(
            f"align.defense.harmful: {len(shared)} prompts of the harmful pool are also in "
            f"{what} (first: {shared[0].id}); the pool must be disjoint from the attack and "
            "the evaluation: use another source (default: embedded manyshot-harmful)"
        )


class HarmfulBatches:
    """The pool tokenized like the run's data, and one batch of it per step."""

    def __init__(self, run: Any, source: Any, batch_size: int):
        from bds.data.tokenize import tokenize_records
        from bds.training.batching import StepSampler

        d = run.cfg.data
        self.run = run
        self.samples, report = tokenize_records(
            load_pool(source), run.tokenizer, d.template, d.max_length, d.truncation
        )
        if not self.samples:
            raise BDSInputError(
                f"defense harmful: no sample of the pool fits data.max_length={d.max_length}"
            )
        if run.progress:
            run.accelerator.print(f"harmful pool: {report.summary()}")
        world = run.accelerator.num_processes
        if batch_size % world:
            raise BDSInputError(
                f"defense.harmful_batch_size={batch_size} must be divisible by the {world} "
                "processes"
            )
        self.sampler = StepSampler(len(self.samples), batch_size, run.tc.seed + 2)

    def batch(self, step: int) -> list[Any]:
        """This rank's share of the step's harmful batch."""
        acc = self.run.accelerator
        rows = self.sampler.rank_batch(step, acc.process_index, acc.num_processes)
        return [self.samples[i] for i in rows]
