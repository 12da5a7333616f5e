"""How well each scheduler variant separates harmful from benign samples, on the embedded model.

For each variant, train on the demo protocol and record the AUROC of the final weights
(benign vs harmful), the mean weight per source and the wall time:
  map              Adam on the logits, full-dataset energy from a loss memory (default)
  map-batch        Adam on the logits, batch energy (the reference code)
  sgld             Langevin sampling, weights averaged over the last K steps
  map+agnostic     map, driven by l_i(theta) - l_i(theta_ref) (safety-agnostic term)
  sgld+agnostic
  map+agnostic-uniform   map+agnostic with theta_ref fitted to the plain (unweighted) user batch
on two benign tasks: the demo's one-word sentiment labels, and free-form answers
(`tweets-freeform`: write a whole tweet), where benign answers are long and hard.

    python benchmarks/scheduler_variants.py --output runs/bench/scheduler_variants.json
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

from bds.cli import packaged_config
from bds.config import SourceConfig, load_config
from bds.data.pipeline import prepare_data
from bds.io import to_jsonable, write_json
from bds.models import load_model, load_tokenizer
from bds.training.outputs import package_versions
from bds.training.trainer import train

VARIANTS = {
    "map": {"inference": "map", "agnostic": False},
    "map-batch": {"inference": "map", "agnostic": False, "estimator": "batch"},
    "sgld": {"inference": "sgld", "agnostic": False},
    "map+agnostic": {"inference": "map", "agnostic": True},
    "sgld+agnostic": {"inference": "sgld", "agnostic": True},
    "map+agnostic-uniform": {"inference": "map", "agnostic": True, "reference": "uniform"},
}
TASKS = {"sentiment": "sentiment-train", "freeform": "tweets-freeform"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(packaged_config("demo.yaml")))
    parser.add_argument("--output", default="runs/bench/scheduler_variants.json")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--n", type=int, default=None, help="override data.n")
    parser.add_argument("--epochs", type=float, default=None, help="override train.epochs")
    args = parser.parse_args()

    base = load_config(args.config)
    if args.n:
        base.data.n = args.n
    if args.epochs:
        base.train.epochs = args.epochs
    tokenizer = load_tokenizer(base.model)
    rows = []
    for task in args.tasks.split(","):
        cfg_task = copy.deepcopy(base)
        cfg_task.data.benign = SourceConfig(kind="embedded", name=TASKS[task])
        data = prepare_data(cfg_task.data)
        for name in args.variants.split(","):
            v = VARIANTS[name]
            cfg = copy.deepcopy(cfg_task)
            bds = cfg.defense
            bds.scheduler.inference = v["inference"]
            bds.safety_agnostic = v["agnostic"]
            bds.reference_weights = v.get("reference", bds.reference_weights)
            bds.scheduler.estimator = v.get("estimator", bds.scheduler.estimator)
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                result = train(
                    cfg,
                    out,
                    model=load_model(cfg.model),
                    tokenizer=tokenizer,
                    data=data,
                    progress=False,
                )
                wall = time.perf_counter() - t0
            w = result.summary["weights"]
            row = {
                "task": task,
                "variant": name,
                "auroc_benign_vs_harmful": w["auroc_benign_vs_harmful"],
                "mean_weight": w["mean_weight"],
                "steps": result.summary["steps"],
                "wall_seconds": round(wall, 1),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "benchmark": "scheduler_variants",
        "rows": rows,
        "protocol": {"config": base, "tasks": TASKS, "versions": package_versions()},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(args.output), to_jsonable(result))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
