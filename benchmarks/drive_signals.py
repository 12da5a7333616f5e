"""Which per-sample signal separates harmful from benign user samples, before any training?

A fast screen for scheduler drives (issue 13): on the aligned model as the demo builds it,
with no fine-tuning step taken, compute for every user sample i a set of candidate
signals and the AUROC of each (benign vs harmful; 1.0 = every benign sample scores above
every harmful one, 0.5 = no signal, < 0.5 = the signal favours the harmful samples):

  loss           -l_i (the loss drive's direction: a low loss keeps its weight)
  ip:<dir>       <g_i, G_dir>, g_i the gradient of l_i and G_dir the mean gradient of an
                 alignment subset, in the weight space of the LoRA-targeted matrices
                 (the full matrices, not a rank-r adapter): the first-order change of l_i
                 that a step on that subset causes, up to -lr
  cos:<dir>      the same, divided by |g_i| |G_dir|
  lora-ip:<dir>  <g_i, G_dir> in the space of a freshly initialised rank-r adapter's
                 parameters (what the trainer's conflict drive sees at its first step)
  align-delta    l_i(base) - l_i(aligned): how much the alignment stage itself lowered
                 l_i (the finite-step version of ip over the whole alignment SFT)
  prefixK-*      loss, ip and cos with only the first K response tokens labelled, for the
                 sample and for the refusals (K = 1, 4, 16: the decision to comply or refuse)
  contrast-*     ip and cos against G_refuse - G_comply: the mean gradient of refusals
                 minus that of compliant answers to the same harmful prompts, so the
                 direction means "refuse rather than comply", not "write like an
                 assistant" (what every refusal shares with benign prose cancels):
                   -self  the compliant answers are the base model's own greedy answers to
                          the alignment prompts (no harmful data beyond D_safe's prompts)
                   -pool  pyrit-harmful answers to D_safe's prompts, minus every record in
                          the user's data (a defender's harmful pool, disjoint from the attack)
                 with suffix -k4 (CONTRAST_PREFIXES): only the first 4 response tokens labelled
  refusal-*      how strongly the alignment set's answer applies to the sample's own prompt:
                 D_safe's refusals (REFUSAL_PROBES of them, first REFUSAL_TOKENS tokens)
                 put behind x_i and scored by the aligned model (no gradient):
                   -fit     mean loss of the refusals behind x_i (high = x_i is not a
                            prompt the alignment set would refuse)
                   -margin  that loss minus l_i (per token): the model's preference for the
                            sample's own answer over a refusal
                   -shift   the same refusal loss at the aligned model minus at the base
                            model: what alignment taught about refusing x_i
                   -open    -log of the probability mass of the generic refusal openings
                            (the evidence drive's: D_safe's commonest) right after x_i: the
                            aligned model's propensity to refuse x_i (high = it would not)
                   -open-shift  that at the aligned model minus at the base model

dirs: all (the demo's alignment set: D_safe + retain answers), refusal (D_safe only),
retain (the retain answers only).

    python benchmarks/drive_signals.py --tasks tweets-freeform --groups prefix,full,lora \
        --output benchmarks/results/drive_signals.json
    python benchmarks/drive_signals.py --tasks tweets-freeform,instruct-human,sentiment \
        --groups contrast --output benchmarks/results/drive_signals_contrast.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import torch
from common import previous_rows, write_rows
from scheduler_separation import TASKS, task_config

from bds.align import align_stage, answer_retain_requests, saved_retain
from bds.cli import packaged_config
from bds.config import load_config
from bds.data.pipeline import prepare_data
from bds.data.schema import Record
from bds.data.tokenize import IGNORE_INDEX, tokenize_records
from bds.defenses.bds import BDSSettings
from bds.io import short_digest
from bds.models import load_model, load_tokenizer
from bds.stats import auroc
from bds.training.batching import collate
from bds.training.evidence import prompt_and_opening_ids, refusal_log_mass, refusal_openings
from bds.training.losses import per_sample_loss


def target_weights(model, names: list[str]) -> list[torch.nn.Parameter]:
    """The weight matrices a LoRA on `names` would adapt, in a fixed order."""
    return [m.weight for n, m in model.named_modules() if n.split(".")[-1] in names]


def sample_grad(model, params, sample) -> tuple[float, list[torch.Tensor]]:
    ids = torch.tensor([sample.input_ids])
    labels = torch.tensor([sample.labels])
    loss = per_sample_loss(model(input_ids=ids).logits, labels)[0]
    grads = torch.autograd.grad(loss, params)
    return float(loss.detach()), grads


def mean_grad(model, params, samples, chunk: int = 16) -> list[torch.Tensor]:
    """The gradient of the mean per-sample loss, in padded chunks (one backward each)."""
    total = [torch.zeros_like(p) for p in params]
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        batch = collate(part, pad_id=0)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss = per_sample_loss(logits, batch["labels"]).sum() / len(samples)
        for t, gi in zip(total, torch.autograd.grad(loss, params), strict=True):
            t.add_(gi)
    return total


@torch.no_grad()
def batch_losses(model, samples, chunk: int = 16) -> list[float]:
    out = []
    for start in range(0, len(samples), chunk):
        batch = collate(samples[start : start + chunk], pad_id=0)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        out += per_sample_loss(logits, batch["labels"]).tolist()
    return out


@torch.no_grad()
def directional(model, params, direction, samples, step: float) -> list[float]:
    """<grad l_i, direction> for every sample by central differences along `direction`,
    (l_i(W + hD) - l_i(W - hD)) / 2h: four batched forward passes instead of one backward
    per sample. h must keep h * <grad l_i, D> small (~1e-3): a gradient direction is one of
    high curvature, so a step sized by the weights' norm is far outside the linear range."""
    for q, v in zip(params, direction, strict=True):
        q.add_(v, alpha=step)
    plus = batch_losses(model, samples)
    for q, v in zip(params, direction, strict=True):
        q.add_(v, alpha=-2 * step)
    minus = batch_losses(model, samples)
    for q, v in zip(params, direction, strict=True):
        q.add_(v, alpha=step)
    return [(a - b) / (2 * step) for a, b in zip(plus, minus, strict=True)]


def dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(sum((x * y).sum() for x, y in zip(a, b, strict=True)))


def losses(model, samples) -> list[float]:
    # batched (right padding, masked): equal to one sample at a time up to float rounding
    return batch_losses(model, samples)


def lora_model(model, cfg):
    from peft import LoraConfig, get_peft_model

    lc = cfg.train.lora
    torch.manual_seed(cfg.train.seed)
    return get_peft_model(
        copy.deepcopy(model),
        LoraConfig(r=lc.r, lora_alpha=lc.alpha, target_modules=list(lc.target_modules)),
    )


def clip(samples, k: int):
    """The samples with only their first k response tokens labelled (the decision prefix)."""
    out = []
    for s in samples:
        first = next(i for i, t in enumerate(s.labels) if t != IGNORE_INDEX)
        labels = list(s.labels[: first + k]) + [IGNORE_INDEX] * (len(s.labels) - first - k)
        out.append(dataclasses.replace(s, labels=labels[: len(s.labels)]))
    return out


_OWN: dict[tuple, list] = {}
CONTRAST_PREFIXES = (None,)  # (None, 4) adds the first-4-token variant
OWN_ANSWERS = Path("runs/bench/own_answers")  # kept to read them (and not generate twice)


def _own_answers(cfg, alignment: tuple, log) -> list:
    """The base model's greedy answers to D_safe's prompts (once per process)."""
    key = tuple(r.id for r in alignment)
    saved = OWN_ANSWERS.with_suffix(f".{short_digest(list(key))}.jsonl")
    if key not in _OWN and saved.is_file():
        _OWN[key] = [Record(**json.loads(line)) for line in saved.read_text().splitlines()]
    if key not in _OWN:
        requests = [dataclasses.replace(r, response="", meta={}) for r in alignment]
        _OWN[key], notes = answer_retain_requests(cfg, requests, log)
        log(f"  base-model answers to D_safe prompts: {len(_OWN[key])} ({'; '.join(notes)})")
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text("".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in _OWN[key]))
    return _OWN[key]


def contrast_pairs(cfg, data, log=print) -> dict[str, tuple[list, list]]:
    """name -> (refusals, compliant answers) on D_safe's harmful prompts (see contrast-*)."""
    from bds.data.embedded import pyrit_harmful

    prompts = {r.instruction for r in data.alignment}
    own = _own_answers(cfg, tuple(data.alignment), log)
    in_user = {r.id for r in data.finetune} | {(r.instruction, r.response) for r in data.finetune}
    pool = [
        r
        for r in pyrit_harmful().records
        if r.instruction in prompts
        and r.id not in in_user
        and (r.instruction, r.response) not in in_user
    ]
    pooled = {r.instruction for r in pool}
    return {
        "self": (data.alignment, own),
        "pool": ([r for r in data.alignment if r.instruction in pooled], pool),
    }


REFUSAL_PROBES = 8
REFUSAL_TOKENS = 16


def refusal_probes(user_records, alignment, tokenizer, d) -> tuple[list, list[int]]:
    """Every user prompt with each of REFUSAL_PROBES refusals (cut to REFUSAL_TOKENS tokens)
    as its answer; returns the samples and, for each, the index of its user sample."""
    refusals = [r for r in alignment if not r.meta.get("retain")][:: max(1, len(alignment) // 64)]
    picks = refusals[:REFUSAL_PROBES]
    cut = [tokenizer.decode(tokenizer(r.response)["input_ids"][:REFUSAL_TOKENS]) for r in picks]
    records, owner = [], []
    for i, u in enumerate(user_records):
        for k, text in enumerate(cut):
            records.append(dataclasses.replace(u, id=f"{u.id}#refusal{k}", response=text))
            owner.append(i)
    samples, report = tokenize_records(records, tokenizer, d.template, d.max_length, "truncate")
    assert len(samples) == len(records), report
    return samples, owner


def opening_propensity(model, user_records, openings, tokenizer, d) -> list[float]:
    """-log sum_o p(o | x_i) over the openings o: the evidence drive's own computation
    (bds.training.evidence), so the screen measures what the drive will use."""
    prompts, opening_ids = prompt_and_opening_ids(
        user_records, openings, tokenizer, d.template, d.max_length
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return (-refusal_log_mass(model, prompts, opening_ids, pad)).tolist()


def screen(
    task: str, p: float, base_cfg, aligned: Path, retain, tokenizer, groups: set[str]
) -> dict:
    cfg = task_config(base_cfg, task, p)
    data = prepare_data(cfg.data)
    d = cfg.data
    user, _ = tokenize_records(data.finetune, tokenizer, d.template, d.max_length, d.truncation)
    refusal, _ = tokenize_records(data.alignment, tokenizer, d.template, d.max_length, d.truncation)
    ret, _ = tokenize_records(retain, tokenizer, d.template, d.max_length, d.truncation)
    harmful = [s.source == "harmful" for s in user]

    aligned_cfg = copy.deepcopy(cfg.model)
    aligned_cfg.name = str(aligned)
    model = load_model(aligned_cfg).float().eval()
    base = load_model(cfg.model).float().eval()
    for m in (model, base):
        m.requires_grad_(False)
    scores: dict[str, list[float]] = {}

    l_aligned = losses(model, user)
    scores["loss"] = [-x for x in l_aligned]
    scores["align-delta"] = [b - a for a, b in zip(l_aligned, losses(base, user), strict=True)]
    if "refusal" in groups:
        kept = {s.id for s in user}
        records = [r for r in data.finetune if r.id in kept]
        probes, owner = refusal_probes(records, data.alignment, tokenizer, d)

        def per_user(values: list[float]) -> list[float]:
            sums = [0.0] * len(user)
            for v, i in zip(values, owner, strict=True):
                sums[i] += v / REFUSAL_PROBES
            return sums

        fit = per_user(batch_losses(model, probes))
        scores["refusal-fit"] = fit
        scores["refusal-margin"] = [f - x for f, x in zip(fit, l_aligned, strict=True)]
        base_fit = per_user(batch_losses(base, probes))
        scores["refusal-shift"] = [f - b for f, b in zip(fit, base_fit, strict=True)]
        openings = refusal_openings(data.alignment, None, BDSSettings.evidence_count)
        opening = opening_propensity(model, records, openings, tokenizer, d)
        scores["refusal-open"] = opening
        base_open = opening_propensity(base, records, openings, tokenizer, d)
        scores["refusal-open-shift"] = [a - b for a, b in zip(opening, base_open, strict=True)]
        print(f"  {task} p={p} refusal probes done", flush=True)
    del base

    weights = target_weights(model, list(cfg.train.lora.target_modules))
    for k in (1, 4, 16) if "prefix" in groups else ():
        for q in weights:
            q.requires_grad_(True)
        direction = mean_grad(model, weights, clip(refusal, k))
        norm = dot(direction, direction) ** 0.5
        for s in clip(user, k):
            lk, g = sample_grad(model, weights, s)
            ip = dot(g, direction)
            scores.setdefault(f"prefix{k}-loss", []).append(-lk)
            scores.setdefault(f"prefix{k}-ip:refusal", []).append(ip)
            scores.setdefault(f"prefix{k}-cos:refusal", []).append(
                ip / max(norm * dot(g, g) ** 0.5, 1e-12)
            )
        for q in weights:
            q.requires_grad_(False)
        print(f"  {task} p={p} prefix {k} done", flush=True)

    spaces = {}
    if "full" in groups:
        spaces[""] = (model, weights)
    if "lora" in groups:
        peft = lora_model(model, cfg)
        spaces["lora-"] = (peft, [q for n, q in peft.named_parameters() if "lora_" in n])
    for prefix, (net, params) in spaces.items():
        for q in params:
            q.requires_grad_(True)
        dirs = {"refusal": mean_grad(net, params, refusal), "retain": mean_grad(net, params, ret)}
        share = len(refusal) / (len(refusal) + len(ret))
        dirs["all"] = [share * a + (1 - share) * b for a, b in zip(*dirs.values(), strict=True)]
        norms = {k: dot(v, v) ** 0.5 for k, v in dirs.items()}
        print(f"  {task} p={p} {prefix or 'full-'}space: directions done", flush=True)
        for s in user:
            _, g = sample_grad(net, params, s)
            gn = dot(g, g) ** 0.5
            for k, v in dirs.items():
                ip = dot(g, v)
                scores.setdefault(f"{prefix}ip:{k}", []).append(ip)
                if not prefix:
                    scores.setdefault(f"cos:{k}", []).append(ip / max(gn * norms[k], 1e-12))
        for q in params:
            q.requires_grad_(False)

    if "contrast" in groups:
        for name, (refuse, comply) in contrast_pairs(cfg, data).items():
            r_tok, _ = tokenize_records(refuse, tokenizer, d.template, d.max_length, d.truncation)
            c_tok, _ = tokenize_records(comply, tokenizer, d.template, d.max_length, d.truncation)
            print(f"  contrast-{name}: {len(r_tok)} refusals vs {len(c_tok)} compliances")
            for k in CONTRAST_PREFIXES:
                clip_k = (lambda x: x) if k is None else (lambda x, k=k: clip(x, k))
                for q in weights:
                    q.requires_grad_(True)
                gr = mean_grad(model, weights, clip_k(r_tok))
                gc = mean_grad(model, weights, clip_k(c_tok))
                for q in weights:
                    q.requires_grad_(False)
                direction = [a - b for a, b in zip(gr, gc, strict=True)]
                label = f"contrast-{name}" + ("" if k is None else f"-k{k}")
                for q in weights:  # exact values for a few samples: the step, and a check
                    q.requires_grad_(True)
                head = clip_k(user)[:3]
                exact = [dot(sample_grad(model, weights, s)[1], direction) for s in head]
                for q in weights:
                    q.requires_grad_(False)
                step = 1e-3 / max(max(abs(x) for x in exact), 1e-12)
                scores[f"ip:{label}"] = directional(model, weights, direction, clip_k(user), step)
                print(f"  {label}: exact {exact} vs differences {scores[f'ip:{label}'][:3]}")
                print(f"  {task} p={p} {label} done", flush=True)

    out = {}
    for name, values in scores.items():
        ben = [v for v, h in zip(values, harmful, strict=True) if not h]
        harm = [v for v, h in zip(values, harmful, strict=True) if h]
        out[name] = {
            "auroc_benign_vs_harmful": round(auroc(ben, harm), 4),
            "mean_benign": sum(ben) / len(ben),
            "mean_harmful": sum(harm) / len(harm),
        }
    return {
        "n": len(user),
        "n_harmful": sum(harmful),
        "n_benign": len(user) - sum(harmful),
        "signals": out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(packaged_config("demo.yaml")))
    parser.add_argument("--output", default="runs/bench/drive_signals.json")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--ps", default="0.1")
    parser.add_argument("--groups", default="prefix,full,lora", help="signal groups to compute")
    args = parser.parse_args()

    base_cfg = load_config(args.config)
    tokenizer = load_tokenizer(base_cfg.model)
    aligned = align_stage(base_cfg, prepare_data(base_cfg.data))  # cached
    retain = saved_retain(aligned)
    output = Path(args.output)
    rows = previous_rows(output)
    done = {(r["task"], r["p"]) for r in rows}
    for task in args.tasks.split(","):
        for p in (float(x) for x in args.ps.split(",")):
            if (task, p) in done:
                continue
            t0 = time.perf_counter()
            row = {
                "task": task,
                "p": p,
                **screen(
                    task, p, base_cfg, aligned, retain, tokenizer, set(args.groups.split(","))
                ),
            }
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "signals"}))
            for name, s in row["signals"].items():
                print(f"  {name:18s} AUROC {s['auroc_benign_vs_harmful']:.3f}")
            protocol = {
                "config": base_cfg,
                "aligned_model": aligned.name,
                "alignment_set": f"D_safe + {len(retain)} retain samples",
            }
            write_rows(output, "drive_signals", rows, protocol)


if __name__ == "__main__":
    main()
