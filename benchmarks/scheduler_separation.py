"""Does the scheduler tell harmful samples from benign ones, whatever the benign task?

On the aligned model as the demo builds it (cached), for each benign task, harmful ratio p
and scheduler drive (defense.drive, see bds/training/conflict.py), fine-tune with BDS on the
demo protocol and record:
  - AUROC of the final weights, benign vs harmful;
  - the mean weight per source;
  - the harmful samples' share of the total training weight (sum over steps of the weights
    applied), against their share under SFT (n_harmful / N), and the ratio of the two;
  - the mean step time (same batches for every drive: same data, seed and process).
Benign tasks: the demo's one-word sentiment labels, and three with free-text answers:
whole tweets (tweets-freeform), LLM-written instruction answers (instruct-llm) and
human-written long answers (instruct-human).
Drives: loss (the reference code: each sample's current loss), conflict (the alignment
update's first-order effect on each sample's loss, against the alignment direction averaged
over about an epoch), conflict-step (against each step's own alignment batch), twin (loss
minus the loss of a reference adapter that starts from the same init and is stepped on the
same weighted user batches without D_safe: the finite form of the conflict drive),
evidence (how much the alignment stage raised the probability of refusing each sample's
prompt, against the base model: bds/training/evidence.py).

Results are written after every run, and rows already in --output are kept (resume).
--override KEY=VALUE (repeatable) changes the run config of every row (e.g.
defense.scheduler.transform=sigmoid); such rows record it, and their drive is labelled
`DRIVE+LABEL` (--label) so they sit beside the plain ones in one file.

    python benchmarks/scheduler_separation.py --output benchmarks/results/scheduler_separation.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from common import previous_rows, write_rows

from bds.align import align_stage, saved_retain
from bds.cli import packaged_config
from bds.config import SourceConfig, load_config
from bds.data.pipeline import prepare_data
from bds.defenses.registry import settings_for
from bds.models import load_model, load_tokenizer
from bds.training.trainer import train

TASKS = {
    "sentiment": "sentiment-train",
    "tweets-freeform": "tweets-freeform",
    "instruct-llm": "instruct-llm",
    "instruct-human": "instruct-human",
}
DRIVES = {
    "loss": {"drive": "loss", "safety_agnostic": False},
    "conflict": {"drive": "conflict", "conflict_window": "epoch", "safety_agnostic": False},
    "conflict-step": {"drive": "conflict", "conflict_window": "step", "safety_agnostic": False},
    "twin": {"drive": "loss", "safety_agnostic": True, "reference_weights": "scheduler"},
    "evidence": {"drive": "evidence", "safety_agnostic": False},
}


def task_config(base, task: str, p: float):
    """`base` with the benign source of `task` at harmful ratio p."""
    cfg = copy.deepcopy(base)
    cfg.data.benign = SourceConfig(kind="embedded", name=TASKS[task])
    cfg.data.harmful_ratio = p
    return cfg


def run_one(cfg, data, tokenizer) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = train(
            cfg, out, model=load_model(cfg.model), tokenizer=tokenizer, data=data, progress=False
        )
        wall = time.perf_counter() - t0
    s = result.summary
    w = s["weights"]
    evidence = s.get("evidence", {})
    sft_share = data.mix.n_harmful / len(data.finetune)
    share = w["training_weight_share"].get("harmful", 0.0)
    return {
        "auroc_benign_vs_harmful": w["auroc_benign_vs_harmful"],
        "mean_weight": w["mean_weight"],
        "harmful_weight_share": share,
        "harmful_share_under_sft": round(sft_share, 6),
        "harmful_share_ratio_to_sft": round(share / sft_share, 4) if sft_share else None,
        "steps": s["steps"],
        "mean_step_seconds": s["mean_step_seconds"],
        "mixed_precision": s["mixed_precision"],
        "wall_seconds": round(wall, 1),
        **({"evidence": evidence} if evidence else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(packaged_config("demo.yaml")))
    parser.add_argument("--output", default="runs/bench/scheduler_separation.json")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--ps", default="0.1,0.3")
    parser.add_argument("--drives", default="loss,conflict")
    parser.add_argument("--override", action="append", default=[], help="KEY=VALUE, repeatable")
    parser.add_argument(
        "--label", help="appended to the drive's name in the rows (with --override)"
    )
    args = parser.parse_args()
    if args.override and not args.label:
        parser.error("--override needs --label (the rows' drive becomes DRIVE+LABEL)")

    base = load_config(args.config, overrides=args.override)
    output = Path(args.output)
    rows = previous_rows(output)
    done = {(r["task"], r["p"], r["drive"]) for r in rows}
    tokenizer = load_tokenizer(base.model)
    aligned = align_stage(base, prepare_data(base.data))  # cached
    retain = saved_retain(aligned) if base.align.retain_in_alignment_set else []
    for task in args.tasks.split(","):
        for p in (float(x) for x in args.ps.split(",")):
            cfg_data = task_config(base, task, p)
            data = prepare_data(cfg_data.data)
            data = dataclasses.replace(data, alignment=list(data.alignment) + retain)
            for drive in args.drives.split(","):
                name = f"{drive}+{args.label}" if args.label else drive
                if (task, p, name) in done:
                    continue
                cfg = copy.deepcopy(cfg_data)
                cfg.model.name = str(aligned)
                cfg.defense = settings_for("bds", cfg.defense)
                for key, value in DRIVES[drive].items():
                    setattr(cfg.defense, key, value)
                row = {"task": task, "p": p, "drive": name, **run_one(cfg, data, tokenizer)}
                if args.override:
                    row["overrides"] = args.override
                rows.append(row)
                print(json.dumps(row), flush=True)
                protocol = {
                    "config": base,
                    "aligned_model": aligned.name,
                    "alignment_set": f"D_safe + {len(retain)} retain samples",
                    "tasks": TASKS,
                    "drives": DRIVES,
                }
                write_rows(output, "scheduler_separation", rows, protocol)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
