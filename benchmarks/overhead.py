"""Step-time overhead of BDS, on the same batches, with the embedded model.

Measures the mean step time (first step excluded as warm-up) of:
  sft            user batch only
  mix            alignment batch + unweighted user batch (one forward over both)
  bds            alignment batch + weighted user batch + scheduler update (one forward)
  bds-two-pass   as bds, with separate forwards for the two batches
  bds-agnostic   bds + the safety-agnostic reference adapter (an extra forward/backward)
  bds-N=...      bds with the scheduler over N samples (D_ft repeated to N), showing that
                 only the O(N) softmax grows with N
and prints the ratios BDS/Mix and BDS/SFT. Writes JSON with the protocol.

    python benchmarks/overhead.py --output runs/bench/overhead.json [--steps 6] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import environment

from bds.cli import packaged_config
from bds.config import load_config
from bds.data.pipeline import PreparedData, prepare_data
from bds.io import to_jsonable, write_json
from bds.models import load_model, load_tokenizer
from bds.training.trainer import train


def variant(cfg, steps: int, defense: str | None = None, **overrides):
    """`cfg` for `steps` timed steps, running `defense` (a preset of the configured one keeps
    its settings); each override sets the defense's setting of that name, else train's."""
    from bds.defenses.registry import settings_for

    cfg = copy.deepcopy(cfg)
    cfg.train = replace(
        cfg.train, max_steps=steps, log_steps=1, trajectory_steps=10**9, save_steps=None
    )
    if defense is not None:
        cfg.defense = settings_for(defense, cfg.defense)
    for key, value in overrides.items():
        setattr(cfg.defense if hasattr(cfg.defense, key) else cfg.train, key, value)
    return cfg


def repeat_to(data: PreparedData, n: int) -> PreparedData:
    """D_ft repeated (with fresh ids) to n samples: same batches' cost, a bigger scheduler."""
    records = [
        replace(r, id=f"{r.id}#{k}")
        for k in range(-(-n // len(data.finetune)))
        for r in data.finetune
    ][:n]
    return PreparedData(records, data.alignment, data.mix, data.sources)


def time_variant(cfg, data, tokenizer, label: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = train(
            cfg, out, model=load_model(cfg.model), tokenizer=tokenizer, data=data, progress=False
        )
        wall = time.perf_counter() - t0
    row = {
        "variant": label,
        "mean_step_seconds": result.summary["mean_step_seconds"],
        "steps": result.summary["steps"],
        "n_scheduler": len(data.finetune),
        "wall_seconds": round(wall, 1),
    }
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(packaged_config("demo.yaml")))
    parser.add_argument("--output", default="runs/bench/overhead.json")
    parser.add_argument(
        "--steps", type=int, default=6, help="steps per variant (the first is warm-up)"
    )
    parser.add_argument(
        "--sizes", default="1000,100000", help="scheduler sizes N for the scaling rows"
    )
    parser.add_argument("--quick", action="store_true", help="only sft, mix, bds")
    args = parser.parse_args()

    cfg = load_config(args.config)
    tokenizer = load_tokenizer(cfg.model)
    data = prepare_data(cfg.data)
    rows = [
        time_variant(variant(cfg, args.steps, defense="sft"), data, tokenizer, "sft"),
        time_variant(variant(cfg, args.steps, defense="mix"), data, tokenizer, "mix"),
        time_variant(variant(cfg, args.steps, defense="bds"), data, tokenizer, "bds"),
    ]
    if not args.quick:
        rows.append(
            time_variant(
                variant(cfg, args.steps, defense="bds", one_pass=False),
                data,
                tokenizer,
                "bds-two-pass",
            )
        )
        rows.append(
            time_variant(
                variant(cfg, args.steps, defense="bds", safety_agnostic=True),
                data,
                tokenizer,
                "bds-agnostic",
            )
        )
        for n in (int(x) for x in args.sizes.split(",") if x):
            rows.append(
                time_variant(
                    variant(cfg, args.steps, defense="bds"),
                    repeat_to(data, n),
                    tokenizer,
                    f"bds-N={n}",
                )
            )
    by = {r["variant"]: r["mean_step_seconds"] for r in rows}
    ratios = {"bds/mix": by["bds"] / by["mix"], "bds/sft": by["bds"] / by["sft"]}
    if "bds-two-pass" in by:
        ratios["one-pass/two-pass"] = by["bds"] / by["bds-two-pass"]
    sizes = [r for r in rows if r["variant"].startswith("bds-N=")]
    if len(sizes) >= 2:
        ratios[f"{sizes[-1]['variant']}/{sizes[0]['variant']}"] = (
            sizes[-1]["mean_step_seconds"] / sizes[0]["mean_step_seconds"]
        )
    for key, value in ratios.items():
        print(f"{key}: {value:.3f}")
    result = {
        "benchmark": "overhead",
        "rows": rows,
        "ratios": ratios,
        "protocol": {
            "config": cfg,
            "steps_per_variant": args.steps,
            "timed_steps": args.steps - 1,
            "same_batches": "every variant uses train.seed, so the same user and alignment batches",
            **environment(),
        },
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(args.output), to_jsonable(result))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
