"""SFT: plain supervised fine-tuning, mean CE over the user batch. No defense.

The reference point of every comparison, and the default alignment-stage defense (the
alignment stage is SFT on D_safe, bds/align.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bds.defenses.base import Defense
from bds.defenses.registry import DefenseSettings, Stage


@dataclass
class SFTSettings(DefenseSettings):
    """No settings: the train section's are all it reads."""

    stages: ClassVar[tuple[Stage, ...]] = ("alignment", "fine-tuning")
    name: str = "sft"


class SFT(Defense):
    """The base hooks as they are: CE on the user batch."""
