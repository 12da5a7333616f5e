"""`bds audit`: score a new dataset with a trained neural scheduler, without training.

The weights are those the scheduler would give the dataset at the start of a run that
reuses it frozen: N * softmax over the dataset's logits (or 2 * sigmoid), so a weight
below 1 means "less than an average sample". Writes weights.csv (id, source, weight,
logit) and audit.json (counts below a threshold, the lowest-weight samples, mean weight
per source and, when benign and harmful labels are both present, the AUROC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bds.data.schema import Record
from bds.errors import BDSInputError
from bds.io import write_json

SHOWN_TEXT_CHARS = 160


def parse_data_spec(spec: str) -> tuple[Any, str | None]:
    """`[LABEL=]SOURCE` -> (SourceConfig, label). SOURCE: embedded:NAME, hub:NAME or a file."""
    from bds.config import SourceConfig
    from bds.data.schema import SOURCE_LABELS
    from bds.errors import FieldError

    label = None
    head, sep, rest = spec.partition("=")
    if sep and head in SOURCE_LABELS:
        label, spec = head, rest
    elif sep and ":" not in head and not Path(spec).exists():
        raise BDSInputError(
            f"data {spec!r}: the label before '=' must be one of {', '.join(SOURCE_LABELS)}"
        )
    kind, colon, name = spec.partition(":")
    if colon and kind in ("embedded", "hub"):
        cfg = SourceConfig(kind=kind, name=name, label=label)
    else:
        cfg = SourceConfig(kind="local", path=spec, label=label)
    try:
        cfg.validate()
    except FieldError as exc:
        raise BDSInputError(f"data {spec!r}: {exc.key}: {exc}") from None
    return cfg, label


def check_saved_scheduler(folder: str | Path, flag: str = "--scheduler") -> dict[str, Any]:
    """The metadata of a saved scheduler folder, any damage to it in one sentence."""
    from bds.schedulers.neural import HEAD_FILE, saved_meta

    try:
        meta = saved_meta(folder)
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise BDSInputError(
            f"{flag} {folder}: a damaged saved scheduler ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); save it again from a run"
        ) from None
    if not (Path(folder) / HEAD_FILE).is_file():
        raise BDSInputError(f"{flag} {folder}: {HEAD_FILE} is missing; save it again from a run")
    return meta


def load_audit_records(
    specs: Sequence[str], limit: int | None = None
) -> tuple[list[Record], list[str]]:
    """Records of every DATA argument + notes. When two arguments hold the same id, every id
    is prefixed with its argument's position (`1:`, `2:`, ...) so the table stays joinable."""
    from bds.data.sources import load_source

    records: list[Record] = []
    notes: list[str] = []
    per_spec: list[int] = []
    for spec in specs:
        cfg, label = parse_data_spec(spec)
        if limit is not None:
            cfg.limit = limit
        loaded = load_source(cfg)
        if label is not None:  # what the user says the samples are, for the AUROC
            loaded.records = [replace(r, source=label) for r in loaded.records]
        records.extend(loaded.records)
        per_spec.append(len(loaded.records))
        notes.extend(f"{spec}: {note}" for note in loaded.notes)
        notes.append(f"{spec}: {len(loaded.records)} records")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        positions = [k + 1 for k, count in enumerate(per_spec) for _ in range(count)]
        records = [replace(r, id=f"{k}:{r.id}") for k, r in zip(positions, records, strict=True)]
        notes.append(
            "ids repeat across DATA arguments: each prefixed with its position (1:, 2:, ...)"
        )
    return records, notes


def audit(
    scheduler_dir: str | Path,
    records: Sequence[Record],
    output: str | Path,
    threshold: float = 0.5,
    show: int = 10,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    import torch

    from bds.schedulers.encoder import sample_text
    from bds.schedulers.neural import load_saved, score_texts
    from bds.schedulers.transforms import weights_from_logits
    from bds.training.outputs import package_versions, weight_summary, write_weights_table

    if not records:
        raise BDSInputError("no samples to audit: the DATA arguments hold no records")
    encoder, head, meta = load_saved(scheduler_dir)
    texts = [sample_text(r) for r in records]
    z = score_texts(encoder, head, texts, desc="audit")
    w = weights_from_logits(z, meta["transform"])
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    ids = [r.id for r in records]
    sources = [r.source for r in records]
    write_weights_table(out / "weights.csv", ids, sources, w.tolist(), z.tolist(), {})
    order = torch.argsort(w).tolist()
    below = [i for i in order if float(w[i]) < threshold]
    summary = {
        "scheduler": str(scheduler_dir),
        "scheduler_meta": meta,
        "n": len(records),
        "threshold": threshold,
        "below_threshold": len(below),
        "fraction_below_threshold": len(below) / len(records),
        "lowest": [
            {
                "id": ids[i],
                "source": sources[i],
                "weight": round(float(w[i]), 4),
                "text": _cut(texts[i]),
            }
            for i in order[:show]
        ],
        **weight_summary(sources, w.tolist()),
        "notes": list(notes),
        "versions": package_versions(),
    }
    write_json(out / "audit.json", summary)
    return summary


def _cut(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SHOWN_TEXT_CHARS else flat[: SHOWN_TEXT_CHARS - 1] + "…"
