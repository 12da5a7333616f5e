"""Defense registry: a name in the config picks a defense's settings and its hooks.

One line per defense: name -> "module:Settings:Hooks". Settings dataclasses are imported
when a config names them (their modules import torch only inside the hooks, so loading a
config stays fast); the hooks class when a run starts. A preset (bds-neural, bds-no-align)
is a name whose settings class gives other defaults to the same hooks.
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from bds.errors import FieldError

Stage = Literal["alignment", "fine-tuning", "post-fine-tuning", "data filter"]
Data = Literal["user", "alignment", "harmful"]
# where the user's job can be defended: before (filter), during, after (repair)
ATTACK_STAGES: tuple[Stage, ...] = ("data filter", "fine-tuning", "post-fine-tuning")

DEFENSES: dict[str, str] = {
    "sft": "bds.defenses.sft:SFTSettings:SFT",
    "mix": "bds.defenses.mix:MixSettings:Mix",
    "bds": "bds.defenses.bds:BDSSettings:BDS",
    "bds-neural": "bds.defenses.bds:BDSNeuralSettings:BDS",
    "bds-no-align": "bds.defenses.bds:BDSNoAlignSettings:BDS",
    "safeinstr": "bds.defenses.safeinstr:SafeInstrSettings:SafeInstr",
    "lisa": "bds.defenses.lisa:LisaSettings:Lisa",
    "ldifs": "bds.defenses.ldifs:LDIFSSettings:LDIFS",
    "oracle-filter": "bds.defenses.oracle_filter:OracleFilterSettings:OracleFilter",
    "safe-lora": "bds.defenses.safe_lora:SafeLoRASettings:SafeLoRA",
    "antidote": "bds.defenses.antidote:AntidoteSettings:Antidote",
    "guard-filter": "bds.defenses.guard_filter:GuardFilterSettings:GuardFilter",
    "vaccine": "bds.defenses.vaccine:VaccineSettings:Vaccine",
    "booster": "bds.defenses.booster:BoosterSettings:Booster",
    "repnoise": "bds.defenses.repnoise:RepNoiseSettings:RepNoise",
}


@dataclass
class DefenseSettings:
    """What every defense's settings share: its registered `name`.

    A subclass declares the defense's `stages` (where in the pipeline it can act) and the
    data it reads (`needs`: user, alignment, harmful), and adds its own fields.
    """

    name: str = ""
    stages: ClassVar[tuple[Stage, ...]] = ("fine-tuning",)
    needs: ClassVar[frozenset[Data]] = frozenset({"user"})

    @classmethod
    def resolve_settings_class(cls, data: dict[str, Any]) -> type:
        """The config builder's hook: the settings class the mapping's `name` registers."""
        if "name" not in data:
            raise FieldError("name", f"is required; choose one of {', '.join(DEFENSES)}")
        return settings_class(data["name"])

    @property
    def alignment_batch(self) -> bool:
        """Whether its steps draw an alignment batch (the trainer tokenizes D_safe for it)."""
        return "alignment" in self.needs

    def variant(self, name: str) -> DefenseSettings | None:
        """These settings as preset `name` of the same defense (None: not one of ours)."""
        return copy.deepcopy(self) if name == self.name else None

    def key(self) -> dict[str, Any]:
        """What names this defense and its settings in a cache key."""
        from bds.io import to_jsonable

        return to_jsonable(self)


def _entry(name: str) -> tuple[str, str, str]:
    module, settings, hooks = DEFENSES[name].split(":")
    return module, settings, hooks


def settings_class(name: Any) -> type:
    """The settings dataclass registered as `name`; FieldError listing the known ones."""
    if name not in DEFENSES:
        raise FieldError("name", f"unknown defense {name!r}; choose one of {', '.join(DEFENSES)}")
    module, settings, _ = _entry(name)
    return getattr(importlib.import_module(module), settings)


def default_settings(name: str) -> DefenseSettings:
    return settings_class(name)()


def defense_names(*stages: Stage) -> list[str]:
    """Registered names, those acting at one of `stages` if given."""
    return [n for n in DEFENSES if not stages or set(settings_class(n).stages) & set(stages)]


def settings_for(name: str, configured: DefenseSettings) -> DefenseSettings:
    """Settings to run defense `name` with: the configured ones re-pointed to preset `name`
    when it is a preset of the configured defense (bds -> bds-neural keeps the scheduler's
    settings), else `name`'s defaults."""
    return configured.variant(name) or default_settings(name)


def build_defense(settings: DefenseSettings, run: Any) -> Any:
    """The hooks object of `settings.name` for one training run."""
    module, _, hooks = _entry(settings.name)
    return getattr(importlib.import_module(module), hooks)(settings, run)


def check_stage(settings: DefenseSettings, where: str, stages: tuple[Stage, ...]) -> None:
    """FieldError unless the defense acts at one of `stages` (where: the config key)."""
    if not set(settings.stages) & set(stages):
        fits = ", ".join(defense_names(*stages))
        raise FieldError(
            "name",
            f"{settings.name} is a {'/'.join(settings.stages)}-stage defense; {where} takes "
            f"one of {fits}",
        )
