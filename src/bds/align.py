"""The alignment stage: base model -> safety-aligned model (SFT on D_safe, adapter merged).

The paper's models arrive aligned; the embedded SmolLM2-135M does not (it complies with
AdvBench), so `bds demo` aligns it first. Refusals alone teach a small model to refuse
everything; `align.retain` adds benign requests answered the way the base model already
answers them (self-distillation, generated once), so alignment learns when to refuse and
the model stays helpful -- and an attack has alignment to break.

The result is cached in $BDS_CACHE/aligned/<key>; the key covers the base model, the
alignment records, the retain requests and how they are answered, the train settings
an SFT run reads, and the alignment-stage defense (`align.defense`) with its settings when
it is not plain SFT (so the SFT-aligned model keeps the key it always had, and another
defense builds its own model), and the records of its harmful pool when it reads one
(Booster, RepNoise; the pool must share no prompt with the user's data or the
harmful-score prompts).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

from bds.assets import cache_dir
from bds.config import RunConfig
from bds.data.pipeline import PreparedData
from bds.data.schema import Record
from bds.defenses.registry import default_settings
from bds.errors import BDSInputError
from bds.io import atomic_directory, short_digest, to_jsonable
from bds.lock import LOCK_FILE, folder_lock

RETAIN_FILE = "retain.jsonl"
ALIGNMENT_INFO_FILE = "bds_alignment.json"
ADAPTER_DIR = "adapter"  # the alignment LoRA (PEFT safetensors) beside the merged model
# The aligned model's answers to the demo's evaluation prompts, as generation journals
# (bds/eval/generate.py): shipped with the asset, they spare the demo that generation.
ANSWERS_DIR = "answers"
# A generated answer that ran into max_new_tokens is cut back to its last full sentence;
# a base model prompted in a foreign template may also start a new "### ..." turn.
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_NEW_TURN = re.compile(r"\n?#{2,}\s")


# Work in progress beside the cached model (<key>.work): the retain answers' journal and the
# alignment SFT's checkpoints, so an interrupted stage resumes where it stopped.
WORK_SUFFIX = ".work"
RETAIN_JOURNAL = "retain-journal.jsonl"
ALIGN_SAVE_STEPS = 10  # a LoRA checkpoint is a few MB: cheap next to 10 steps


def alignment_plan(cfg: RunConfig, data: PreparedData) -> tuple[RunConfig, list[Record], dict]:
    """The alignment SFT's run config, the retain requests, and the spec the cache key
    hashes: everything the aligned model depends on."""
    acfg = copy.deepcopy(cfg)
    acfg.defense = copy.deepcopy(cfg.align.defense)
    acfg.train.lr = cfg.align.lr or cfg.train.lr
    acfg.train.epochs = cfg.align.epochs or cfg.train.epochs
    requests = retain_requests(cfg)
    spec: dict[str, Any] = {
        "model": _model_key(acfg.model),
        "data": [r.to_dict() for r in data.alignment],
        "train": _alignment_settings(acfg.train),
    }
    if acfg.defense != default_settings("sft"):  # absent for SFT: its models keep their key
        spec["defense"] = acfg.defense.key()
    if "harmful" in acfg.defense.needs:  # the pool's records, not only its name, key the model
        spec["harmful"] = [r.to_dict() for r in _harmful_pool(cfg, data)]
    if requests:  # absent otherwise, so a model aligned without retain set keeps its key
        spec["retain"] = {
            "requests": [r.to_dict() for r in requests],
            "answers": cfg.align.retain_answers,
            "template": cfg.align.retain_template,
            "max_new_tokens": cfg.align.retain_max_new_tokens,
            "generation": {
                "batch_size": cfg.eval.batch_size,
                "dtype": cfg.eval.generation_model(cfg.model).dtype,  # as resolved (auto)
            },
        }
    return acfg, requests, spec


def _model_key(model: Any) -> dict[str, Any]:
    """The base model's settings in the key; load_in_4bit only when set, so models aligned
    before it existed (and the shipped one) keep their key."""
    key = to_jsonable(model)
    if not key.get("load_in_4bit"):
        key.pop("load_in_4bit", None)
    return key


def alignment_key(cfg: RunConfig, data: PreparedData) -> str:
    """The aligned model's cache key (its folder name under $BDS_CACHE/aligned)."""
    return short_digest(alignment_plan(cfg, data)[2])


def align_stage(cfg: RunConfig, data: PreparedData, log: Any = print, wait: bool = True) -> Path:
    """A safety-aligned model folder: the base fine-tuned on D_safe (+ retain set), merged.

    Cached by everything it depends on; the package's shipped adapter is used when it was
    built for the same key (bds/aligned_asset.py); an interrupted build keeps its finished
    retain answers and its latest SFT checkpoint in `<key>.work/` and resumes from them.
    One process builds a key at a time: another one waits for it (`wait`), or gets
    bds.lock.FolderBusy (a bench worker then runs other cells first)."""
    acfg, requests, spec = alignment_plan(cfg, data)
    target = cache_dir() / "aligned" / short_digest(spec)
    if (target / "config.json").is_file():
        log(f"align: reusing {target}")
        return target
    work = target.with_name(target.name + WORK_SUFFIX)
    with folder_lock(work, note=log, wait=wait):
        if (target / "config.json").is_file():  # built by the process this one waited for
            log(f"align: reusing {target}")
        else:
            _build(cfg, data, acfg, requests, spec, target, work, log)
    if work.is_dir() and not any(work.iterdir()):
        work.rmdir()  # the lock's folder, left empty by a process that waited
    return target


def _build(cfg, data, acfg, requests, spec, target: Path, work: Path, log: Any) -> None:
    from bds.aligned_asset import install_shipped, shipped_retain
    from bds.training.trainer import train

    if install_shipped(cfg.model, spec, target, log):
        return
    retain: list[Record] = []
    notes: list[str] = []
    if requests:
        retain, notes = shipped_retain(spec, log) or answer_retain_requests(
            cfg, requests, log, journal=work / RETAIN_JOURNAL, fingerprint=target.name
        )
        for note in notes:
            log(f"align: retain set: {note}")
    log(
        f"align: fine-tuning {cfg.model.name} on {len(data.alignment)} alignment samples"
        + (f" + {len(retain)} retain samples" if retain else "")
        + (f", defense {acfg.defense.name}" if "defense" in spec else "")
        + (f" (harmful pool: {len(spec['harmful'])} samples)" if "harmful" in spec else "")
    )
    align_data = PreparedData(list(data.alignment) + retain, [], data.mix, data.sources)
    acfg.train.save_steps = acfg.train.save_steps or ALIGN_SAVE_STEPS  # not in the key
    result = train(acfg, work / "sft", data=align_data)
    info = {
        "base": cfg.model.name,
        "n_alignment": len(data.alignment),
        "n_retain": len(retain),
        "retain": {"notes": notes, **spec.get("retain", {}), "requests": len(requests)},
        "train": acfg.train,
        "defense": acfg.defense,
        "n_harmful_pool": len(spec.get("harmful", [])),
    }
    adapter = result.output_dir / "adapter"
    merged = merge_adapter(cfg.model, adapter)
    write_aligned(target, merged, cfg.model, adapter, [r.to_dict() for r in retain], info)
    # The model is whole: its work is no longer needed (the lock file goes last, on release).
    for entry in work.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        elif entry.name != LOCK_FILE:
            entry.unlink()


def merge_adapter(model_cfg: Any, adapter: Path) -> Any:
    """The base model of `model_cfg` with the LoRA `adapter` merged in."""
    from peft import PeftModel

    from bds.models import load_model

    return PeftModel.from_pretrained(load_model(model_cfg), str(adapter)).merge_and_unload()


def write_aligned(
    target: Path,
    merged: Any,
    model_cfg: Any,
    adapter: Path,
    retain_rows: list[dict[str, Any]],
    info: dict[str, Any],
    answers: Path | None = None,
) -> None:
    """Write the aligned model folder (atomically): the merged model, its tokenizer, the
    adapter itself (ADAPTER_DIR, PEFT safetensors), the retain samples, the alignment info
    and (shipped only) its evaluation answers (ANSWERS_DIR). A built and a shipped adapter
    both come through here, so the attack stage starts from the same model either way."""
    from bds.models import load_tokenizer

    with atomic_directory(target) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        load_tokenizer(model_cfg).save_pretrained(tmp)
        shutil.copytree(adapter, tmp / ADAPTER_DIR)
        if retain_rows:
            _write_jsonl(tmp / RETAIN_FILE, retain_rows)
        if answers is not None:
            shutil.copytree(answers, tmp / ANSWERS_DIR)
        (tmp / ALIGNMENT_INFO_FILE).write_text(json.dumps(to_jsonable(info), indent=2))


def saved_retain(aligned: Path) -> list[Record]:
    """The retain samples an aligned model was trained on (empty if it had none), labelled
    `safe`: provider data, as D_safe is; `meta["retain"]` tells them from D_safe's refusals
    (a defense that wants safety demonstrations only, as SafeInstr, leaves them out)."""
    path = aligned / RETAIN_FILE
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [
        Record(**{**row, "source": "safe", "meta": {**row.get("meta", {}), "retain": True}})
        for row in rows
    ]


def retain_requests(cfg: RunConfig) -> list[Record]:
    """The retain set's requests (with their own answers when `retain_answers: given`)."""
    from bds.data.sources import load_source

    if cfg.align.retain is None:
        return []
    given = cfg.align.retain_answers == "given"
    loaded = load_source(cfg.align.retain, prompts_only=not given)
    if not loaded.records:
        raise BDSInputError(f"align.retain: the source {loaded.name} holds no records; check it")
    records = [dataclasses.replace(r, source="benign") for r in loaded.records]
    if not given:  # answers are generated: the source's own (if any) take no part in the key
        records = [dataclasses.replace(r, response="") for r in records]
    return records


def answer_retain_requests(
    cfg: RunConfig,
    requests: list[Record],
    log: Any = print,
    journal: Path | None = None,
    fingerprint: str = "",
) -> tuple[list[Record], list[str]]:
    """Retain samples: the requests with the base model's own answers (or their given ones).

    Returns the samples and notes counting what was cut or left out. `journal` keeps each
    finished batch of answers (see eval.generate), so an interrupted run resumes.
    """
    if cfg.align.retain_answers == "given":
        kept = [r for r in requests if r.response.strip()]
        notes = [f"{len(requests) - len(kept)} requests without an answer left out"]
        return kept, notes if len(kept) < len(requests) else []
    from bds.eval.generate import generate, load_generator

    log(f"align: the base model answers {len(requests)} retain requests (once, then cached)")
    model, tokenizer = load_generator(cfg.eval.generation_model(cfg.model))
    answers = generate(
        model,
        tokenizer,
        requests,
        cfg.align.retain_template,
        cfg.align.retain_max_new_tokens,
        batch_size=cfg.eval.batch_size,
        seed=cfg.train.seed,
        desc="retain answers",
        journal=journal,
        fingerprint=fingerprint,
        # as the shipped retain answers were made (the cache key does not record it)
        share_prefix=False,
    )
    kept, cut, empty = [], 0, 0
    for record, gen in zip(requests, answers, strict=True):
        text, was_cut = clean_answer(gen.output, gen.hit_limit)
        cut += was_cut
        if not text:
            empty += 1
            continue
        kept.append(
            dataclasses.replace(record, response=text, meta={**record.meta, "cut": was_cut})
        )
    notes = [
        f"{cut} of {len(requests)} answers cut back to their last full sentence "
        f"(max_new_tokens {cfg.align.retain_max_new_tokens} or a new turn)",
    ]
    if empty:
        notes.append(f"{empty} empty answers left out")
    return kept, notes


def clean_answer(text: str, hit_limit: bool) -> tuple[str, bool]:
    """(answer, whether it was cut): stops at a new template turn; an answer that ran into
    the token limit ends at its last full sentence (or is dropped if it has none)."""
    turn = _NEW_TURN.search(text)
    cut = hit_limit or turn is not None
    if turn is not None:
        text = text[: turn.start()]
    text = text.strip()
    if cut:
        ends = list(_SENTENCE_END.finditer(text))
        text = text[: ends[-1].end()].strip() if ends else ""
    return text, cut


# Train settings an SFT run on D_safe does not read: changing them keeps the cached model.
# (mode, scheduler, drive... were train settings once; they are the defense's now.)
_NOT_ALIGNMENT = (
    "alignment_batch_size",
    "one_pass",
    "log_steps",
    "trajectory_steps",
    "save_steps",
    "report_to",
)


def _harmful_pool(cfg: RunConfig, data: PreparedData) -> list[Record]:
    """The alignment defense's harmful pool, refused if it shares a prompt with the user's
    data (the attack) or the harmful-score prompts (the evaluation)."""
    from bds.data.sources import load_source
    from bds.defenses.harmful_pool import check_disjoint, load_pool

    pool = load_pool(cfg.align.defense.harmful)
    check_disjoint(pool, data.finetune, "the user's data (data.benign / data.harmful)")
    prompts = load_source(cfg.eval.harmful_score.prompts, prompts_only=True).records
    check_disjoint(pool, prompts, "the harmful-score prompts (eval.harmful_score.prompts)")
    return pool


def _alignment_settings(train: Any) -> dict[str, Any]:
    from bds.precision import resolve_mixed_precision

    settings = to_jsonable(train)
    # the precision actually used (auto differs by machine) decides the model, not the word
    settings["mixed_precision"] = resolve_mixed_precision(train.mixed_precision)[0]
    return {k: v for k, v in settings.items() if k not in _NOT_ALIGNMENT}


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
