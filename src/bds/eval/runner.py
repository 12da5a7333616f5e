"""Run the evaluation: load prompt sets, generate, judge, score, write results.json.

Stages run in order and each frees what it no longer needs (a 7B judge and a 7B generator
need not share a GPU): prompt sets (bad input fails here, before any model loads) ->
generation -> judges, one at a time -> scores -> results.json (written atomically).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bds.data.schema import LoadedSource, Record
from bds.errors import BDSInputError
from bds.eval.config import EvalConfig
from bds.eval.metrics import alpaca_eval_rows, infer_metric, score_answer
from bds.io import write_json
from bds.training.outputs import package_versions

if TYPE_CHECKING:
    from bds.config import ModelConfig, SourceConfig
    from bds.eval.generate import Generation

RESULTS_FILE = "results.json"
PARTIAL_DIR = ".partial"  # generation journals of an unfinished evaluation (resumable)
ALPACA_EVAL_FILE = "alpaca_eval_outputs.json"


@dataclass
class PromptSet:
    """The records one metric generates for, and how they were chosen."""

    metric: str
    source: SourceConfig  # as loaded (hub evaluation split filled in)
    loaded: LoadedSource
    max_new_tokens: int
    task_metric: str | None = None  # finetune_accuracy only: label / number / alpaca-eval
    generations: list[Generation] = field(default_factory=list)

    @property
    def records(self) -> list[Record]:
        return self.loaded.records


def user_text(record: Record) -> str:
    """The request as a judge reads it: instruction, then input if any."""
    return record.instruction if not record.input else f"{record.instruction}\n\n{record.input}"


def load_prompt_sets(ev: EvalConfig, base_dir: str | Path = ".") -> list[PromptSet]:
    """Records for each metric of `ev.metrics`; an empty set is an input error."""
    from bds.data.sources import load_source

    sets = []
    for metric in ev.metrics:
        if metric == "harmful_score":
            source, tokens, task = ev.harmful_score.prompts, ev.harmful_score.max_new_tokens, None
            key = "eval.harmful_score.prompts"
        elif metric == "over_refusal":
            source, tokens, task = ev.over_refusal.prompts, ev.over_refusal.max_new_tokens, None
            key = "eval.over_refusal.prompts"
        else:
            fa = ev.finetune_accuracy
            source, tokens, key = fa.data, fa.max_new_tokens, "eval.finetune_accuracy.data"
            task = infer_metric(fa.data) if fa.metric == "auto" else fa.metric
            source = _evaluation_split(source)
        # HS and over-refusal need prompts only: a local file may have no response column
        loaded = load_source(source, base_dir=base_dir, prompts_only=task is None)
        if not loaded.records:
            raise BDSInputError(f"{key}: the source {loaded.name} holds no records; check it")
        sets.append(PromptSet(metric, source, loaded, tokens, task))
    return sets


def _evaluation_split(source: SourceConfig) -> SourceConfig:
    """A hub task preset without an explicit split is scored on the protocol's evaluation split."""
    if source.kind != "hub" or source.split is not None:
        return source
    from bds.data.hub import HUB_PRESETS

    preset = HUB_PRESETS.get(source.name or "")
    if preset is None or preset.eval_split is None:
        return source
    return dataclasses.replace(source, split=preset.eval_split)


def run_eval(
    model_cfg: ModelConfig,
    ev: EvalConfig,
    template: str,
    output_dir: str | Path,
    base_dir: str | Path = ".",
    log: Any = print,
    identity: str | None = None,
    keep_journals: bool = False,
) -> dict[str, Any]:
    """Evaluate `model_cfg` (+ `ev.adapter`) and write `output_dir/results.json`; return it.

    `identity`: what names the model's weights in the generation journals' key in place of
    its path (a content key, e.g. an aligned model's cache key), so answers journaled on
    another machine are recognised. `keep_journals`: leave them in output_dir/PARTIAL_DIR."""
    import torch

    from bds.eval.generate import generate, load_generator
    from bds.models import resolve_adapter

    started = time.time()
    model_cfg = ev.generation_model(model_cfg)
    output_dir = Path(output_dir)
    adapter = resolve_adapter(ev.adapter) if ev.adapter else None  # a hub id: its snapshot
    sets = load_prompt_sets(ev, base_dir)
    device = "cuda" if torch.cuda.is_available() else None

    log(f"loading {model_cfg.name}" + (f" with adapter {ev.adapter}" if ev.adapter else ""))
    model, tokenizer = load_generator(model_cfg, adapter, device)
    for ps in sets:
        ps.generations = generate(
            model,
            tokenizer,
            ps.records,
            template,  # type: ignore[arg-type]
            ps.max_new_tokens,
            batch_size=ev.batch_size,
            seed=ev.seed,
            desc=f"{ps.metric}: generating",
            journal=output_dir / PARTIAL_DIR / f"{ps.metric}.jsonl",
            fingerprint=_fingerprint(model_cfg, adapter, template, identity),
        )
    del model
    _free_memory()

    verdicts: dict[str, dict[str, list[dict]]] = {ps.metric: {} for ps in sets}
    judge_protocols = []
    judged = [ps for ps in sets if ps.metric in ("harmful_score", "over_refusal")]
    if judged:
        from bds.eval.judges import build_judge, judge_class
        from bds.eval.judges.base import has_content, no_content_verdict

        for jcfg in ev.judges:
            cls = judge_class(jcfg.name)
            todo = [ps for ps in judged if ps.metric == "harmful_score" or cls.detects_refusal]
            if not todo:
                continue
            log(f"judging with {jcfg.name}")
            judge = build_judge(jcfg, device)
            for ps in todo:
                answers = [g.output for g in ps.generations]
                found = judge.judge([user_text(r) for r in ps.records], answers)
                # an answer that says nothing harms no one and helps no one
                found = [v if has_content(a) else no_content_verdict(v) for v, a in zip(found, answers, strict=True)]  # fmt: skip
                verdicts[ps.metric][jcfg.name] = [v.to_dict() for v in found]
            judge_protocols.append(judge.protocol())
            judge.close()
            del judge
            _free_memory()

    results = _results(model_cfg, ev, template, sets, verdicts, judge_protocols, device)
    results["wall_seconds"] = round(time.time() - started, 1)
    output_dir.mkdir(parents=True, exist_ok=True)
    for ps in sets:
        if ps.task_metric == "alpaca-eval":
            rows = alpaca_eval_rows(
                ps.records, [g.output for g in ps.generations], _generator_name(model_cfg, ev)
            )
            write_json(output_dir / ALPACA_EVAL_FILE, rows)
    write_json(output_dir / RESULTS_FILE, results)
    if not keep_journals:
        shutil.rmtree(output_dir / PARTIAL_DIR, ignore_errors=True)
    return results


def journal_keys(
    model_cfg: ModelConfig,
    ev: EvalConfig,
    template: str,
    identity: str | None = None,
    base_dir: str | Path = ".",
) -> dict[str, str]:
    """The key run_eval's generation journal of each metric gets (only the tokenizer loads):
    journaled answers whose key differs are generated again."""
    from bds.eval.generate import journal_key
    from bds.models import load_tokenizer, resolve_adapter

    model_cfg = ev.generation_model(model_cfg)
    adapter = resolve_adapter(ev.adapter) if ev.adapter else None
    tokenizer = load_tokenizer(model_cfg, padding_side="left")
    fingerprint = _fingerprint(model_cfg, adapter, template, identity)
    return {
        ps.metric: journal_key(
            tokenizer,
            ps.records,
            template,
            ps.max_new_tokens,
            ev.batch_size,
            fingerprint,  # type: ignore[arg-type]
        )
        for ps in load_prompt_sets(ev, base_dir)
    }


def _fingerprint(
    model_cfg: ModelConfig, adapter: str | None, template: str, identity: str | None = None
) -> str:
    """What the answers depend on besides the prompts: the model (its `identity` where one is
    given, else its name or path; and its dtype), the adapter's files as they are now (a
    retrained adapter at the same path differs), the template."""
    files = []
    if adapter:
        for f in sorted(Path(adapter).glob("*")):
            if f.is_file():
                st = f.stat()
                files.append([f.name, st.st_size, st.st_mtime_ns])
    return json.dumps(
        [identity or model_cfg.name, model_cfg.revision, model_cfg.dtype, adapter, files, template]
    )


def _results(
    model_cfg: ModelConfig,
    ev: EvalConfig,
    template: str,
    sets: list[PromptSet],
    verdicts: dict[str, dict[str, list[dict]]],
    judge_protocols: list[dict],
    device: str | None,
) -> dict[str, Any]:
    scores: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    metric_protocols: dict[str, Any] = {}
    generations: dict[str, list[dict]] = {}
    for ps in sets:
        n = len(ps.records)
        rows = []
        task_scores = []
        for i, (record, gen) in enumerate(zip(ps.records, ps.generations, strict=True)):
            row = {
                "id": record.id,
                "instruction": record.instruction,
                "input": record.input,
                "prompt": gen.prompt,
                "output": gen.output,
                "new_tokens": gen.new_tokens,
                "hit_limit": gen.hit_limit,
            }
            if ps.metric == "finetune_accuracy":
                scored = score_answer(gen.output, record, ps.task_metric or "label")
                task_scores.append(scored)
                row.update(scored)
            else:
                row["verdicts"] = {name: vs[i] for name, vs in verdicts[ps.metric].items()}
            rows.append(row)
        generations[ps.metric] = rows
        hit_limit = sum(g.hit_limit for g in ps.generations)
        metric_protocols[ps.metric] = {
            "source": dataclasses.asdict(ps.source),
            "source_name": ps.loaded.name,
            "source_notes": ps.loaded.notes,
            "prompt_count": n,
            "max_new_tokens": ps.max_new_tokens,
            **({"task_metric": ps.task_metric} if ps.task_metric else {}),
        }
        count: dict[str, Any] = {"prompts": n, "hit_max_new_tokens": hit_limit}
        unparsed = {
            name: sum(bool(v.get("detail", {}).get("unparsed")) for v in vs)
            for name, vs in verdicts.get(ps.metric, {}).items()
        }
        if any(unparsed.values()):
            count["judge_output_unparsed"] = unparsed  # counted as not harmful; see verdicts
        if ps.metric == "harmful_score":
            flagged = {
                name: sum(v["harmful"] for v in vs) for name, vs in verdicts[ps.metric].items()
            }
            count["judged_harmful"] = flagged
            scores["harmful_score"] = {name: 100.0 * k / n for name, k in flagged.items()}
        elif ps.metric == "over_refusal":
            refused = {
                name: sum(bool(v["refused"]) for v in vs)
                for name, vs in verdicts[ps.metric].items()
            }
            count["judged_refused"] = refused
            scores["over_refusal"] = {name: 100.0 * k / n for name, k in refused.items()}
        elif ps.task_metric == "alpaca-eval":
            count["exported"] = n
            scores["finetune_accuracy"] = None  # the win rate comes from alpaca_eval
            metric_protocols[ps.metric]["export"] = ALPACA_EVAL_FILE
        else:
            correct = sum(bool(s["correct"]) for s in task_scores)
            count["correct"] = correct
            if ps.task_metric == "number":
                count["no_number_found"] = sum(s["parsed"] is None for s in task_scores)
            scores["finetune_accuracy"] = 100.0 * correct / n
        counts[ps.metric] = count
    return {
        "format": "bds-eval-results/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "headline": _headline(ev, scores),
        "scores": scores,
        "counts": counts,
        "protocol": {
            "model": {
                "name": model_cfg.name,
                "dtype": model_cfg.dtype,  # the precision it generated in (eval.dtype)
                "dtype_reason": ev.generation_dtype_reason(),
                "revision": model_cfg.revision,
                "adapter": ev.adapter,
            },
            "template": template,
            "decoding": "greedy",
            "seed": ev.seed,
            "batch_size": ev.batch_size,
            "padding": "left",
            "device": device or "cpu",
            "metrics": metric_protocols,
            "judges": judge_protocols,
            "judge_configs": [dataclasses.asdict(j) for j in ev.judges],
            "versions": package_versions(),
        },
        "generations": generations,
    }


def _headline(ev: EvalConfig, scores: dict[str, Any]) -> dict[str, Any]:
    """One number per metric: HS by the first judge, over-refusal by the first refusal judge."""
    from bds.eval.judges import REFUSAL_JUDGES

    out: dict[str, Any] = {}
    first = ev.judges[0].name if ev.judges else None
    if "harmful_score" in scores and first:
        out["harmful_score"] = {"judge": first, "value": scores["harmful_score"].get(first)}
    if "over_refusal" in scores:
        name = next((j.name for j in ev.judges if j.name in REFUSAL_JUDGES), None)
        out["over_refusal"] = {"judge": name, "value": scores["over_refusal"].get(name)}
    if "finetune_accuracy" in scores:
        out["finetune_accuracy"] = {"value": scores["finetune_accuracy"]}
    return out


def _generator_name(model_cfg: ModelConfig, ev: EvalConfig) -> str:
    name = model_cfg.name.rstrip("/").split("/")[-1].replace("embedded:", "")
    return f"{name}+{Path(ev.adapter).name}" if ev.adapter else name


def _free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
