"""Mix: safety-data mixing, CE(user batch) + lambda * CE(alignment batch) at every step.

With lambda = 1 (the default) it is BDS with every weight fixed at 1: the ablation that
isolates the scheduler's contribution (BDS minus Mix, same alignment batch). The
git-disl/Booster repository's data-mixing baseline computes the same objective
(`VlguardTrainer.training_step` in trainer.py: `compute_loss(user) + lamb *
compute_loss(alignment batch)`, an alignment batch of 4 per step) with lambda = 0.1
(script/finetune/united/vlguard_lamb.sh): set `alignment_weight: 0.1` for that protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bds.defenses.base import Defense
from bds.defenses.registry import Data, DefenseSettings
from bds.errors import FieldError


@dataclass
class MixSettings(DefenseSettings):
    """alignment_weight: lambda, the factor on the alignment batch's mean CE."""

    needs: ClassVar[frozenset[Data]] = frozenset({"user", "alignment"})
    name: str = "mix"
    alignment_weight: float = 1.0

    def validate(self) -> None:
        check_alignment_weight(self.alignment_weight)


def check_alignment_weight(value: float) -> None:
    """lambda scales a loss: negative would train away from the alignment set."""
    if value < 0:
        raise FieldError("alignment_weight", f"must be >= 0, got {value}")


class Mix(Defense):
    """The base step with an alignment batch, its CE scaled by lambda (the base reads it)."""
