"""SafeInstr (Bianchi et al., ICLR 2024, "Safety-Tuned LLaMAs"): safety demonstrations
added to the user data, then plain SFT on the union.

k = round(fraction * N) samples of the run's alignment set (harmful prompt + refusal) join
the N user samples, drawn without replacement with the training seed; each is then seen
as often as any user sample, shuffled among them. Retain samples in the alignment set
(helpful answers the model was aligned on, `align.retain_in_alignment_set`) are no safety
demonstrations and are never drawn: on the demo's set (140 refusals + 414 retain answers)
a draw over both added about 2.5 refusals and 7.5 helpful answers per 100 user samples.

Faithful to vinid/safety-tuned-llamas: data/training/saferpaca_Instructions_{100..2000}.json
are 20,000 Alpaca samples plus k = 100...2000 safety demonstrations (0.5 %-10 %),
fine-tuned with plain SFT (training/finetuninig.py, shuffled). The repository fixes no
default k; 0.1 is its largest mix, the one nearest the other defenses' share of alignment
data per step. The demonstrations come from the same alignment set every defense uses.
Cost: (N + k) / N of SFT.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, ClassVar

from bds.defenses.base import Defense
from bds.defenses.registry import Data, DefenseSettings
from bds.errors import BDSInputError, FieldError


@dataclass
class SafeInstrSettings(DefenseSettings):
    """fraction: safety demonstrations added, as a share of the user data's size."""

    needs: ClassVar[frozenset[Data]] = frozenset({"user", "alignment"})
    name: str = "safeinstr"
    fraction: float = 0.1

    @property
    def alignment_batch(self) -> bool:  # the demonstrations join D_ft: no alignment batch
        return False

    def validate(self) -> None:
        if not 0 < self.fraction <= 1:
            raise FieldError("fraction", f"must be in (0, 1], got {self.fraction}")


class SafeInstr(Defense):
    """Adds the demonstrations to D_ft; the steps are SFT's."""

    def prepare_data(self, data: Any) -> Any:
        n = len(data.finetune)
        k = max(1, round(self.settings.fraction * n))
        demonstrations = [r for r in data.alignment if not r.meta.get("retain")]
        if k > len(demonstrations):
            raise BDSInputError(
                f"defense safeinstr: fraction {self.settings.fraction} of {n} user samples is "
                f"{k} demonstrations, but the alignment set holds {len(demonstrations)} safety "
                "demonstrations; lower defense.fraction or give a larger data.alignment"
            )
        picked = random.Random(self.run.tc.seed).sample(demonstrations, k)
        self.added = [r.id for r in picked]
        self.retain_left_out = len(data.alignment) - len(demonstrations)
        return dataclasses.replace(data, finetune=list(data.finetune) + picked)

    def summary(self) -> dict[str, Any]:
        return {
            "safety_demonstrations_added": len(self.added),
            "retain_samples_not_drawn": self.retain_left_out,
        }
