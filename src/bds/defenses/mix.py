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
from typing import Any, ClassVar

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
        if self.alignment_weight < 0:
            raise FieldError("alignment_weight", f"must be >= 0, got {self.alignment_weight}")


class Mix(Defense):
    """The base step with an alignment batch, its CE scaled by lambda."""

    def __init__(self, settings: MixSettings, run: Any):
        super().__init__(settings, run)
        self.alignment_weight = settings.alignment_weight
