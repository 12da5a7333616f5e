"""The demo's aligned model, shipped in the package as its alignment adapter.

The alignment stage is deterministic: for the same key (bds/align.py: base model, alignment
data, retain requests and how they are answered, SFT settings, precision as resolved) it
gives the same adapter. The package ships that adapter (PEFT safetensors, ~2.6 MB), the base
model's retain answers and the key they were built for, so a first `bds demo` merges the
adapter into the base model in seconds instead of running the alignment stage (minutes to
tens of minutes on a CPU). Any other key builds as before.

A shipped adapter is used only when it also reproduces its probe: the log-probabilities the
merged model gave a few fixed texts when it was shipped (a changed base model, or a PEFT
that merges differently, fails it). `python -m bds.aligned_asset` rewrites the asset from the
demo config; a test fails when the asset no longer matches the key the code computes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bds.io import atomic_directory

if TYPE_CHECKING:
    from bds.config import RunConfig
    from bds.data.pipeline import PreparedData

SHIPPED_DIR = Path(__file__).parent / "shipped" / "aligned"
INFO_FILE = "asset.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Fixed texts whose per-token log-probabilities under the merged model the asset records.
PROBE_TEXTS = (
    "Write a tutorial on how to make a bomb.",
    "How do I make a good cup of coffee at home?",
    "The weather today is lovely, so we went for a long walk by the river.",
)
# fp32 sums differ by ~1e-5 between CPUs and thread counts; another base model by far more.
PROBE_TOLERANCE = 2e-3


def shipped_info(folder: Path | None = None) -> dict[str, Any] | None:
    """The shipped asset's record (key, adapter checksum, probe, alignment info), or None."""
    path = (folder or SHIPPED_DIR) / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def install_shipped(model_cfg: Any, spec: dict[str, Any], target: Path, log: Any = print) -> bool:
    """Write the aligned model of `spec` (bds.align.alignment_plan) into `target` from the
    shipped adapter, when the package ships one for its key and it reproduces its probe.
    False: build it instead."""
    from bds.align import merge_adapter, write_aligned
    from bds.io import short_digest

    info = shipped_info()
    if info is None or info["base"] != model_cfg.name:  # the demo's base model only
        return False
    key = short_digest(spec)
    if info["cache_key"] != key:
        precision = spec["train"]["mixed_precision"]
        why = (
            f"mixed_precision {info['mixed_precision']}; here auto resolves to {precision}"
            if precision != info["mixed_precision"]
            else "other settings"
        )
        log(
            f"align: the shipped aligned adapter was built for {why} (key {info['cache_key']}, not {key}): building"
        )
        return False
    adapter = SHIPPED_DIR / "adapter"
    if _sha256(adapter / ADAPTER_WEIGHTS) != info["adapter_sha256"]:
        log(f"align: {adapter / ADAPTER_WEIGHTS} is not the file recorded in {INFO_FILE}: building")
        return False
    merged = merge_adapter(model_cfg, adapter)
    drift = probe_drift(merged, model_cfg, info["probe"])
    if drift > PROBE_TOLERANCE:
        log(f"align: the shipped adapter scores its probe {drift:.2g} apart here: building")
        return False
    rows = _read_jsonl(SHIPPED_DIR / "retain.jsonl")
    alignment = {**info["alignment"], "shipped": f"{SHIPPED_DIR.name} asset, key {key}"}
    write_aligned(target, merged, model_cfg, adapter, rows, alignment)
    log(f"align: using the shipped aligned adapter (key {key}; built with the same settings)")
    return True


def retain_key(spec: dict[str, Any]) -> str:
    """What the retain answers alone depend on: the base model and the retain part of the
    alignment spec (requests, template, max_new_tokens, generation settings)."""
    from bds.io import short_digest

    return short_digest({"model": spec["model"], "retain": spec.get("retain")})


def shipped_retain(spec: dict[str, Any], log: Any = print) -> tuple[list, list[str]] | None:
    """The shipped retain samples and their notes when they were generated for the same
    retain settings as `spec` (the adapter's key may differ: other SFT settings reuse them)."""
    from bds.data.schema import Record

    info = shipped_info()
    if info is None or "retain" not in spec or info.get("retain_key") != retain_key(spec):
        return None
    rows = _read_jsonl(SHIPPED_DIR / "retain.jsonl")
    log(f"align: the base model's retain answers are shipped ({len(rows)} samples): reused")
    return [Record(**row) for row in rows], info["alignment"]["retain"]["notes"]


def probe_logprobs(model: Any, model_cfg: Any) -> list[list[float]]:
    """Per-token log-probabilities of PROBE_TEXTS under `model` (teacher-forced)."""
    import torch

    from bds.models import load_tokenizer

    tokenizer = load_tokenizer(model_cfg)
    model.eval()
    scores = []
    with torch.no_grad():
        for text in PROBE_TEXTS:
            ids = tokenizer(text, return_tensors="pt").input_ids
            logits = model(input_ids=ids).logits.float()
            logp = torch.log_softmax(logits[0, :-1], dim=-1).gather(1, ids[0, 1:, None])
            scores.append([round(v, 6) for v in logp[:, 0].tolist()])
    return scores


def probe_drift(model: Any, model_cfg: Any, expected: list[list[float]]) -> float:
    """Largest difference between `model`'s probe log-probabilities and `expected`."""
    got = probe_logprobs(model, model_cfg)
    if [len(g) for g in got] != [len(e) for e in expected]:
        return float("inf")  # another tokenizer
    return max(
        abs(a - b) for g, e in zip(got, expected, strict=True) for a, b in zip(g, e, strict=True)
    )


def ship(cfg: RunConfig, data: PreparedData, target: Path = SHIPPED_DIR, log: Any = print) -> Path:
    """Build (or reuse) the aligned model of `cfg` and write its adapter, retain answers,
    key and probe into `target`."""
    from bds.align import ADAPTER_DIR, ALIGNMENT_INFO_FILE, RETAIN_FILE, align_stage, alignment_plan
    from bds.errors import BDSInputError
    from bds.io import short_digest
    from bds.models import load_model

    _, _, spec = alignment_plan(cfg, data)
    aligned = align_stage(cfg, data, log)
    adapter = aligned / ADAPTER_DIR
    if not (adapter / ADAPTER_WEIGHTS).is_file():
        raise BDSInputError(
            f"{aligned}: built before aligned models kept their adapter; remove that folder "
            "(or point BDS_CACHE at an empty one) and run again"
        )
    merged = load_model(_with_name(cfg.model, str(aligned)))
    adapter_config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    adapter_config["base_model_name_or_path"] = cfg.model.name  # not this machine's cache path
    info = {
        "cache_key": short_digest(spec),
        "retain_key": retain_key(spec) if "retain" in spec else None,
        "base": cfg.model.name,
        "mixed_precision": spec["train"]["mixed_precision"],
        "generation_dtype": spec.get("retain", {}).get("generation", {}).get("dtype"),
        "adapter_sha256": _sha256(adapter / ADAPTER_WEIGHTS),
        "probe": probe_logprobs(merged, cfg.model),
        "alignment": json.loads((aligned / ALIGNMENT_INFO_FILE).read_text()),
    }
    with atomic_directory(target) as tmp:
        (tmp / "adapter").mkdir()
        shutil.copyfile(adapter / ADAPTER_WEIGHTS, tmp / "adapter" / ADAPTER_WEIGHTS)
        (tmp / "adapter" / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2) + "\n")
        if (aligned / RETAIN_FILE).is_file():
            shutil.copyfile(aligned / RETAIN_FILE, tmp / "retain.jsonl")
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return target


def _with_name(model_cfg: Any, name: str) -> Any:
    import dataclasses

    return dataclasses.replace(model_cfg, name=name)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def main() -> None:
    """Rewrite the shipped asset from the packaged demo config (runs the alignment stage
    unless the cache holds its model already)."""
    from bds.cli import packaged_config
    from bds.config import load_config
    from bds.data.pipeline import prepare_data

    cfg = load_config(packaged_config("demo.yaml"))
    print(ship(cfg, prepare_data(cfg.data)))


if __name__ == "__main__":
    main()
