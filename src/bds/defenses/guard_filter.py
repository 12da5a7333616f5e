"""Guard filter: a guard model reads every user sample (request, answer); the samples it
flags unsafe are dropped, then plain SFT on the rest.

The guard is Llama Guard through the project's llama-guard judge (bds/eval/judges/
llama_guard.py: the checkpoint's chat template over [user: request, assistant: answer],
greedy, harmful iff the output starts with "unsafe"). An output that says neither word is
kept (not flagged) and counted. Default checkpoint meta-llama/Meta-Llama-Guard-2-8B, the
guard the BDS authors' analysis script loads (as recorded in the project's baseline notes;
any Llama Guard checkpoint or folder works, e.g. meta-llama/Llama-Guard-3-8B). The summary
counts kept and dropped samples per source label (benign / harmful / unknown).

No embedded (offline) guard yet. The shipped refusal-classifier judge cannot serve: it is
trained on PyRIT's human-scored answers (bds/eval/judges/refusal_training.py), the rows
the attack's harmful samples (pyrit-harmful) are drawn from, so it would filter its own
training data. A disjoint labelled set does ship offline: PyRIT's many-shot examples
(jailbreak/many_shot_examples.json: 400 answers to harmful requests, about 280 judged
harmful and 110 not harmful by an LLM), which the alignment-defense branch turns into the
`manyshot-harmful` pool after removing every prompt near an attack or evaluation prompt;
a guard trained on it (with benign negatives from a source the evaluation does not use)
is the open follow-up.

Cost: one guard pass (generation of up to 20 tokens) per user sample, before training.
In a multi-process run every rank scores D_ft itself (same verdicts: greedy decoding).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from bds.defenses.base import Defense
from bds.defenses.registry import DefenseSettings, Stage
from bds.errors import BDSInputError, FieldError

DEFAULT_GUARD = "meta-llama/Meta-Llama-Guard-2-8B"


@dataclass
class GuardFilterSettings(DefenseSettings):
    """model: the Llama Guard checkpoint (hub id or folder); batch_size, dtype: how it
    runs (dtype auto: bfloat16 on a GPU, float32 on CPU)."""

    stages: ClassVar[tuple[Stage, ...]] = ("data filter",)
    name: str = "guard-filter"
    model: str = DEFAULT_GUARD
    revision: str | None = None
    batch_size: int = 8
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "auto"

    def validate(self) -> None:
        if self.batch_size < 1:
            raise FieldError("batch_size", f"must be >= 1, got {self.batch_size}")


def load_guard(settings: GuardFilterSettings) -> Any:
    """The llama-guard judge on settings.model (on the GPU when there is one)."""
    import torch

    from bds.eval.config import JudgeConfig
    from bds.eval.judges import build_judge

    cfg = JudgeConfig(
        name="llama-guard",
        model=settings.model,
        revision=settings.revision,
        batch_size=settings.batch_size,
        dtype=settings.dtype,
    )
    return build_judge(cfg, "cuda" if torch.cuda.is_available() else None)


class GuardFilter(Defense):
    """Keeps the user samples the guard does not flag; the steps are SFT's."""

    def prepare_data(self, data: Any) -> Any:
        from bds.eval.runner import user_text

        t0 = time.perf_counter()
        guard = load_guard(self.settings)
        loaded = time.perf_counter()
        records = data.finetune
        try:
            verdicts = guard.judge([user_text(r) for r in records], [r.response for r in records])
            self.protocol = guard.protocol()
        finally:
            guard.close()
        scored = time.perf_counter()
        flagged = [v.harmful for v in verdicts]
        kept = [r for r, f in zip(records, flagged, strict=True) if not f]
        dropped = [r for r, f in zip(records, flagged, strict=True) if f]
        self.counts = {
            "kept": dict(Counter(r.source for r in kept)),
            "dropped": dict(Counter(r.source for r in dropped)),
            "unparsed_kept": sum(bool(v.detail.get("unparsed")) for v in verdicts),
        }
        self.dropped_ids = [r.id for r in dropped]
        self.seconds = {
            "load": round(loaded - t0, 3),
            "score": round(scored - loaded, 3),
            "per_sample": round((scored - loaded) / len(records), 4),
        }
        if not kept:
            raise BDSInputError(
                f"defense guard-filter: the guard ({self.settings.model}) flags all "
                f"{len(records)} user samples; nothing is left to fine-tune on"
            )
        return dataclasses.replace(data, finetune=kept)

    def summary(self) -> dict[str, Any]:
        return {
            "guard": self.protocol,
            "kept": len(self.run.data.finetune),
            "dropped": len(self.dropped_ids),
            "by_source": self.counts,
            "dropped_ids": self.dropped_ids,
            "seconds": self.seconds,
        }
