"""Each defense's cost against SFT, on the embedded default (same batches, same model).

For every registered defense that acts on the user's job (data filter, fine-tuning,
post-fine-tuning), trains the embedded model on the demo config's data for --warmup +
--steps steps and times each step (the warm-up steps are left out), then reports the mean,
the ratio to SFT's, and the steps a whole run of the config's epochs takes (data defenses
change the number of user samples: SafeInstr adds demonstrations, a filter drops samples).
A defense's once-per-run stage (a filter's scoring, a post-fine-tuning repair) is timed by
the defense itself and reported as `stage_seconds`; `run_vs_sft` counts it. Lisa runs with
a 4/4 step split and its proximal term from the first step, so both states and the term are
in the timed steps. The guard filter runs the offline embedded guard (Llama Guard is a hub
download). Alignment-stage defenses: benchmarks/align_defense_cost.py.

    python benchmarks/defense_cost.py --output benchmarks/results/defense_cost.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import write_rows

from bds.cli import packaged_config
from bds.config import load_config
from bds.data.pipeline import prepare_data
from bds.defenses.registry import ATTACK_STAGES, defense_names, settings_for
from bds.io import to_jsonable
from bds.models import load_model, load_tokenizer
from bds.training import trainer as trainer_module

# settings that let a short run show a defense's whole step (its defaults otherwise), or
# run it offline
SHORT_RUN = {
    "lisa": {"alignment_steps": 4, "finetune_steps": 4, "proximal_after": 0.0},
    "guard-filter": {"model": "embedded:guard", "threshold": 0.5},
}


def stage_seconds(defense_summary: dict) -> float:
    """The once-per-run stage's wall seconds as the defense reports them (0: none)."""
    seconds = defense_summary.get("seconds", 0.0)
    if isinstance(seconds, dict):  # the guard filter: load + score (+ per-sample rate)
        return float(seconds.get("load", 0.0)) + float(seconds.get("score", 0.0))
    return float(seconds)


def timed_run(cfg, data, tokenizer, steps: int) -> tuple[list[float], dict]:
    """Per-step wall seconds of `steps` steps of `cfg`, and the run's summary."""
    times: list[float] = []
    real_step = trainer_module._Run.step

    def step(self, index):
        t0 = time.perf_counter()
        out = real_step(self, index)
        times.append(time.perf_counter() - t0)
        return out

    trainer_module._Run.step = step
    try:
        with tempfile.TemporaryDirectory() as out:
            cfg.train = replace(cfg.train, max_steps=steps, log_steps=10**9, trajectory_steps=10**9)
            result = trainer_module.train(
                cfg, out, model=load_model(cfg.model), tokenizer=tokenizer, data=data,
                progress=False,
            )  # fmt: skip
    finally:
        trainer_module._Run.step = real_step
    return times, result.summary


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each row with its step time and whole-run time over SFT's (when SFT is measured)."""
    sft = next((r for r in rows if r["defense"] == "sft"), None)
    if sft is None:
        return rows
    out = []
    sft_run = sft["mean_step_seconds"] * sft["steps_per_run"] + sft.get("stage_seconds", 0.0)
    for row in rows:
        run = row["mean_step_seconds"] * row["steps_per_run"] + row.get("stage_seconds", 0.0)
        out.append(
            {
                **row,
                "step_vs_sft": round(row["mean_step_seconds"] / sft["mean_step_seconds"], 3),
                "run_vs_sft": round(run / sft_run, 3),
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(packaged_config("demo.yaml")))
    parser.add_argument("--output", default="runs/bench/defense_cost.json")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per defense")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--defenses", default=None, help="comma-separated (default: all)")
    parser.add_argument(
        "--no-aligned", dest="aligned", action="store_false",
        help="train the config's model as it is, not the aligned model the demo attacks",
    )  # fmt: skip
    args = parser.parse_args()

    base = load_config(args.config)
    data = prepare_data(base.data)
    if args.aligned:  # the attack's starting point (Safe LoRA reads the base it records)
        from bds.align import align_stage

        base.model = replace(base.model, name=str(align_stage(base, data)))
    tokenizer = load_tokenizer(base.model)
    names = args.defenses.split(",") if args.defenses else defense_names(*ATTACK_STAGES)
    protocol = {
        "config": args.config,
        "model": base.model.name,
        "aligned": args.aligned,
        "n": len(data.finetune),
        "alignment": len(data.alignment),
        "batch_size": base.train.batch_size,
        "alignment_batch_size": base.train.alignment_batch_size,
        "max_length": base.data.max_length,
        "mixed_precision": base.train.mixed_precision,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "short_run_settings": SHORT_RUN,
        "note": (
            "run_vs_sft = (mean step x steps of a whole run (config epochs) + stage_seconds) "
            "vs SFT's"
        ),
    }
    rows = []
    for name in names:
        cfg = copy.deepcopy(base)
        cfg.defense = settings_for(name, base.defense)
        for key, value in SHORT_RUN.get(name, {}).items():
            setattr(cfg.defense, key, value)
        times, summary = timed_run(cfg, data, tokenizer, args.warmup + args.steps)
        timed = times[args.warmup :]
        changed = summary.get("defense", {})
        # a filter reports the samples it kept; SafeInstr the demonstrations it added
        n_user = changed.get("kept", len(data.finetune))
        n_user += changed.get("safety_demonstrations_added", 0)
        rows.append(
            {
                "defense": name,
                "settings": cfg.defense,
                "mean_step_seconds": round(statistics.mean(timed), 4),
                "stdev_step_seconds": round(statistics.stdev(timed), 4) if len(timed) > 1 else 0,
                "steps_per_run": math.ceil(cfg.train.epochs * n_user / cfg.train.batch_size),
                "user_samples": n_user,
                "timed_steps": len(timed),
                "stage_seconds": round(stage_seconds(changed), 3),
            }
        )
        print(json.dumps(to_jsonable(rows[-1])), flush=True)
        write_rows(Path(args.output), "defense_cost", with_ratios(rows), protocol)  # so far
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
