"""Alignment-stage defenses' cost per step against SFT, on the embedded default.

The alignment stage as bds/align.py runs it: the embedded model fine-tuned on D_safe (the
demo config's alignment set; the retain set is left out, so no generation is needed)
with each alignment-stage defense at its defaults, plus RepNoise's CPU-sized setting.
Each run takes --warmup + --steps steps; the warm-up steps are not timed. Same batches,
same model; the CPU may be shared, so the ratios are the numbers to read. --tiny swaps in
the tiny random-init model and tokenizer (bds/tiny.py; 512-token vocabulary, so it
understates what a large vocabulary costs RepNoise), for a reading in seconds.

    python benchmarks/align_defense_cost.py --output benchmarks/results/align_defense_cost.json
    python benchmarks/align_defense_cost.py --tiny --steps 10 \
        --output benchmarks/results/align_defense_cost_tiny.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
from pathlib import Path

from common import write_rows
from defense_cost import timed_run

from bds.cli import packaged_config
from bds.config import load_config
from bds.data.pipeline import PreparedData, prepare_data
from bds.defenses.registry import default_settings, defense_names
from bds.io import to_jsonable
from bds.models import load_tokenizer

# extra rows: (label, defense, settings changed from its defaults). booster-equal-batch: a
# harmful batch as large as the demo's alignment batch (4), as in the official run (10 and 10)
VARIANTS = [
    ("booster-equal-batch", "booster", {"harmful_batch_size": 4}),
    ("repnoise-cpu", "repnoise", {"layer_stride": 4, "harmful_batch_size": 2}),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(packaged_config("demo.yaml")))
    parser.add_argument("--output", default="runs/bench/align_defense_cost.json")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per defense")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--defenses", default=None, help="comma-separated labels (default: all)")
    parser.add_argument("--tiny", action="store_true", help="the tiny model, not the config's")
    args = parser.parse_args()

    base = load_config(args.config)
    if args.tiny:
        from bds.tiny import save_tiny_checkpoint

        base.model.name = str(save_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny"))
        base.train.mixed_precision = "no"
        base.train.attn_implementation = None
    tokenizer = load_tokenizer(base.model)
    data = prepare_data(base.data)
    aligning = PreparedData(list(data.alignment), [], data.mix, data.sources)
    runs = [(name, name, {}) for name in defense_names("alignment")] + VARIANTS
    if args.defenses:
        runs = [r for r in runs if r[0] in args.defenses.split(",")]
    protocol = {
        "config": args.config,
        "model": "tiny (bds/tiny.py)" if args.tiny else base.model.name,
        "alignment_samples": len(aligning.finetune),
        "batch_size": base.train.batch_size,
        "max_length": base.data.max_length,
        "mixed_precision": base.train.mixed_precision,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "note": "alignment stage without the retain set; on a shared CPU min_vs_sft is the "
        "ratio least disturbed by other load",
    }
    rows = []
    for label, name, changes in runs:
        cfg = copy.deepcopy(base)
        cfg.defense = default_settings(name)
        for key, value in changes.items():
            setattr(cfg.defense, key, value)
        times, _ = timed_run(cfg, aligning, tokenizer, args.warmup + args.steps)
        timed = times[args.warmup :]
        rows.append(
            {
                "defense": label,
                "settings": cfg.defense,
                "mean_step_seconds": round(statistics.mean(timed), 4),
                "stdev_step_seconds": round(statistics.stdev(timed), 4) if len(timed) > 1 else 0,
                "median_step_seconds": round(statistics.median(timed), 4),
                "min_step_seconds": round(min(timed), 4),
                "timed_steps": len(timed),
            }
        )
        sft = next((r for r in rows if r["defense"] == "sft"), None)
        if sft is not None:  # the stage's steps are the same for every defense: step ratios
            for stat in ("mean", "median", "min"):  # min: the least disturbed by other load
                rows[-1][f"{stat}_vs_sft"] = round(
                    rows[-1][f"{stat}_step_seconds"] / sft[f"{stat}_step_seconds"], 3
                )
        print(json.dumps(to_jsonable(rows[-1])), flush=True)
        write_rows(Path(args.output), "align_defense_cost", rows, protocol)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
