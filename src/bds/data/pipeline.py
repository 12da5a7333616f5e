"""Config -> records: load the sources, mix D_ft, sample D_safe. One call, fully reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bds.config import DataConfig
from bds.data.mixer import Mix, mix_finetune_set, sample_alignment
from bds.data.schema import LoadedSource, Record
from bds.data.sources import load_source
from bds.errors import BDSInputError


@dataclass
class PreparedData:
    finetune: list[Record]  # D_ft, the user's data (benign + harmful at ratio p)
    alignment: list[Record]  # D_safe, the provider's alignment set (may be empty)
    mix: Mix
    sources: dict[str, LoadedSource] = field(default_factory=dict)  # role -> what was loaded

    def notes(self) -> dict[str, list[str]]:
        return {role: src.notes for role, src in self.sources.items() if src.notes}


def prepare_data(cfg: DataConfig, base_dir: str | Path = ".") -> PreparedData:
    sources: dict[str, LoadedSource] = {}
    for role in ("benign", "harmful", "alignment"):
        source_cfg = getattr(cfg, role)
        if source_cfg is None:
            continue
        loaded = load_source(source_cfg, base_dir=base_dir)
        if not loaded.records:
            raise BDSInputError(f"data.{role}: the source {loaded.name} holds no records; check it")
        if cfg.template == "alpaca" and any(r.form == "conversation" for r in loaded.records):
            loaded.notes.append(
                "conversations are rendered with the model's chat template while data.template "
                "is alpaca (the other sources and the evaluation prompts); set data.template: "
                "chat to ask the model in one format"
            )
        sources[role] = loaded
    _check_unique_ids(sources)
    benign = sources["benign"].records if "benign" in sources else []
    harmful = sources["harmful"].records if "harmful" in sources else []
    mix = mix_finetune_set(benign, harmful, cfg.n, cfg.harmful_ratio, cfg.mix, cfg.seed)
    alignment = (
        sample_alignment(sources["alignment"].records, cfg.n_alignment, cfg.seed)
        if "alignment" in sources
        else []
    )
    return PreparedData(mix.records, alignment, mix, sources)


def _check_unique_ids(sources: dict[str, LoadedSource]) -> None:
    """Ids are unique across the user's sources (benign, harmful), so weights.csv joins
    back to the user's data by id; refused otherwise, with the first repeated id."""
    seen: dict[str, str] = {}
    for role in ("benign", "harmful"):
        if role not in sources:
            continue
        for record in sources[role].records:
            if record.id in seen:
                where = (
                    f"data.{role} ({sources[role].name})"
                    if seen[record.id] != role
                    else f"data.{role} ({sources[role].name}) twice"
                )
                also = f" and data.{seen[record.id]}" if seen[record.id] != role else ""
                raise BDSInputError(
                    f"id {record.id!r} is in {where}{also}; ids must be unique across the "
                    "user's sources so weights.csv joins back to them: rename one, or drop "
                    "the id column to number each file's rows by its name"
                )
            seen[record.id] = role
