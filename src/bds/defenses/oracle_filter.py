"""Oracle-label filter: drop every user sample labelled harmful, then plain SFT.

An upper bound for data filters (a guard model that flags exactly the harmful samples,
never a benign one): it reads the labels the data mixer gives each sample, which a real
provider does not have. It needs labelled data: a user sample of unknown source is an
error rather than kept or dropped by guess. Cost: none beyond SFT on fewer samples.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from bds.defenses.base import Defense
from bds.defenses.registry import DefenseSettings, Stage
from bds.errors import BDSInputError


@dataclass
class OracleFilterSettings(DefenseSettings):
    """No settings: the labels decide."""

    stages: ClassVar[tuple[Stage, ...]] = ("data filter",)
    name: str = "oracle-filter"


class OracleFilter(Defense):
    """Keeps the user samples not labelled harmful; the steps are SFT's."""

    def prepare_data(self, data: Any) -> Any:
        unknown = [r.id for r in data.finetune if r.source == "unknown"]
        if unknown:
            raise BDSInputError(
                f"defense oracle-filter reads each user sample's label, but {len(unknown)} "
                f"carry none (source unknown, e.g. {unknown[0]}); give labelled data "
                "(data.benign / data.harmful) or pick another defense"
            )
        kept = [r for r in data.finetune if r.source != "harmful"]
        if not kept:
            raise BDSInputError(
                "defense oracle-filter drops every user sample (all are labelled harmful); "
                "lower data.harmful_ratio"
            )
        self.dropped = len(data.finetune) - len(kept)
        self.kept = len(kept)
        return dataclasses.replace(data, finetune=kept)

    def summary(self) -> dict[str, Any]:
        return {"dropped_harmful": self.dropped, "kept": self.kept}
