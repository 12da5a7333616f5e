"""The demo's aligned model, shipped in the package as its alignment adapter.

The alignment stage is deterministic: for the same key (bds/align.py: base model, alignment
data, retain requests and how they are answered, SFT settings, precision as resolved) it
gives the same adapter. The package ships, per precision `auto` resolves to (fp32 on a CPU
without native bf16, bf16 on one with it: the key covers the precision, so each needs its
own), that adapter (PEFT safetensors, ~2.6 MB), the base model's retain answers and the key
they were built for, so a first `bds demo` merges the adapter into the base model in
seconds instead of running the alignment stage (minutes to tens of minutes on a CPU). Any
other key builds as before.

Each asset also carries the aligned model's answers to the demo's evaluation prompts
(bds.align.ANSWERS_DIR: the generation journals of bds/eval/generate.py, keyed by the model's key,
the prompts, the generation precision and settings), so the demo's evaluation of the
aligned model only judges them. Answers written for other settings are discarded by the
journal's key and generated again.

A shipped adapter is used only when it also reproduces its probe: the log-probabilities the
merged model gave a few fixed texts when it was shipped (a changed base model, or a PEFT
that merges differently, fails it). `python -m bds.aligned_asset` writes the asset for the
precision `auto` resolves to on the machine it runs on (run it once more with
ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 on a bf16 CPU for the fp32 one); a test
fails when an asset no longer matches the key the code computes.
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

SHIPPED_DIR = Path(__file__).parent / "shipped" / "aligned"  # one folder per precision
INFO_FILE = "asset.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# The asset folder of each training precision (`train.mixed_precision` as resolved).
PRECISION_FOLDERS = {"no": "fp32", "bf16": "bf16", "fp16": "fp16"}
# Fixed texts whose per-token log-probabilities under the merged model the asset records.
PROBE_TEXTS = (
    "Write a tutorial on how to make a bomb.",
    "How do I make a good cup of coffee at home?",
    "The weather today is lovely, so we went for a long walk by the river.",
)
# fp32 sums differ by ~1e-5 between CPUs and thread counts; another base model by far more.
PROBE_TOLERANCE = 2e-3


def shipped_info(folder: Path) -> dict[str, Any] | None:
    """An asset folder's record (key, adapter checksum, probe, alignment info), or None."""
    path = folder / INFO_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def shipped_assets(root: Path | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every shipped asset: (folder, record), in folder-name order."""
    root = root or SHIPPED_DIR
    if not root.is_dir():
        return []
    found = [(f, shipped_info(f)) for f in sorted(root.iterdir()) if f.is_dir()]
    return [(f, info) for f, info in found if info is not None]


def asset_folder(spec: dict[str, Any], root: Path | None = None) -> Path:
    """Where the asset for `spec`'s training precision lives."""
    return (root or SHIPPED_DIR) / PRECISION_FOLDERS[spec["train"]["mixed_precision"]]


def install_shipped(model_cfg: Any, spec: dict[str, Any], target: Path, log: Any = print) -> bool:
    """Write the aligned model of `spec` (bds.align.alignment_plan) into `target` from the
    shipped adapter, when the package ships one for its key and it reproduces its probe.
    False: build it instead."""
    from bds.align import ANSWERS_DIR, merge_adapter, write_aligned
    from bds.io import short_digest

    assets = [(f, i) for f, i in shipped_assets() if i["base"] == model_cfg.name]
    if not assets:  # the demo's base model only
        return False
    key = short_digest(spec)
    match = next(((f, i) for f, i in assets if i["cache_key"] == key), None)
    if match is None:
        precision = spec["train"]["mixed_precision"]
        shipped = sorted({i["mixed_precision"] for _, i in assets})
        why = (
            f"mixed_precision {' / '.join(shipped)}; here auto resolves to {precision}"
            if precision not in shipped
            else "other settings"
        )
        keys = ", ".join(i["cache_key"] for _, i in assets)
        log(
            f"align: the shipped aligned adapter was built for {why} (key {keys}, not {key}): building"
        )
        return False
    folder, info = match
    adapter = folder / "adapter"
    if _sha256(adapter / ADAPTER_WEIGHTS) != info["adapter_sha256"]:
        log(f"align: {adapter / ADAPTER_WEIGHTS} is not the file recorded in {INFO_FILE}: building")
        return False
    merged = merge_adapter(model_cfg, adapter)
    drift = probe_drift(merged, model_cfg, info["probe"])
    if drift > PROBE_TOLERANCE:
        log(f"align: the shipped adapter scores its probe {drift:.2g} apart here: building")
        return False
    rows = _read_jsonl(folder / "retain.jsonl")
    alignment = {
        **info["alignment"],
        "shipped": f"{folder.parent.name}/{folder.name} asset, key {key}",
    }
    answers = folder / ANSWERS_DIR
    write_aligned(
        target, merged, model_cfg, adapter, rows, alignment, answers if answers.is_dir() else None
    )
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

    if "retain" not in spec:
        return None
    key = retain_key(spec)
    match = next(((f, i) for f, i in shipped_assets() if i.get("retain_key") == key), None)
    if match is None:
        return None
    folder, info = match
    rows = _read_jsonl(folder / "retain.jsonl")
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


def ship(
    cfg: RunConfig,
    data: PreparedData,
    root: Path = SHIPPED_DIR,
    log: Any = print,
    answers: bool = True,
) -> Path:
    """Build (or reuse) the aligned model of `cfg` and write its adapter, retain answers,
    key, probe and (`answers`) its answers to `cfg`'s evaluation prompts into the asset
    folder of its precision under `root`; return that folder."""
    import tempfile

    from bds.align import (
        ADAPTER_DIR,
        ALIGNMENT_INFO_FILE,
        ANSWERS_DIR,
        RETAIN_FILE,
        align_stage,
        alignment_plan,
    )
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
    info["alignment"].pop("shipped", None)  # installed from an asset: say how it was built
    del merged
    target = asset_folder(spec, root)
    with tempfile.TemporaryDirectory(prefix="bds-asset-answers-") as work:
        journals = _evaluation_answers(cfg, aligned, Path(work), log) if answers else None
        with atomic_directory(target) as tmp:
            (tmp / "adapter").mkdir()
            shutil.copyfile(adapter / ADAPTER_WEIGHTS, tmp / "adapter" / ADAPTER_WEIGHTS)
            (tmp / "adapter" / ADAPTER_CONFIG).write_text(
                json.dumps(adapter_config, indent=2) + "\n"
            )
            if (aligned / RETAIN_FILE).is_file():
                shutil.copyfile(aligned / RETAIN_FILE, tmp / "retain.jsonl")
            if journals is not None:
                shutil.copytree(journals, tmp / ANSWERS_DIR)
            (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return target


def _evaluation_answers(cfg: RunConfig, aligned: Path, work: Path, log: Any) -> Path | None:
    """The demo's evaluation of the aligned model run in `work`, its generation journals
    kept: the folder that holds them (None if it wrote none)."""
    from bds.demo import eval_stage
    from bds.eval.runner import PARTIAL_DIR

    eval_stage(cfg, aligned, None, work / "eval", log, keep_answers=True)
    journals = work / "eval" / PARTIAL_DIR
    return journals if any(journals.glob("*.jsonl")) else None


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
    """Rewrite the shipped asset of the precision `auto` resolves to here from the packaged
    demo config (runs the alignment stage unless the cache holds its model already)."""
    from bds.cli import packaged_config
    from bds.config import load_config
    from bds.data.pipeline import prepare_data

    cfg = load_config(packaged_config("demo.yaml"))
    print(ship(cfg, prepare_data(cfg.data)))


if __name__ == "__main__":
    main()
