"""Evaluate finished `bds bench` cells again on held-out prompts, and pair the arms.

A comparison whose settings were chosen on the validation split (AdvBench 1-100) is
checked here on prompts no setting was chosen on: each cell's attacked adapter (on the
aligned model its cell record names) answers AdvBench prompts skip+1 .. skip+take (the
bench's test split starts at 101) and the first --fa-take sentiment-test tweets; every
pair of arms gets the mean difference per metric and its two-level paired bootstrap CI over
seeds and items (bds.stats.paired_bootstrap), on the seeds both arms have.

    python benchmarks/heldout_eval.py --arm mix=runs/a,runs/b --arm bds=runs/c,runs/d \\
        --work runs/heldout --output benchmarks/results/x.json
An arm is label=folder[,folder...] of bench output folders; within an arm each seed once.
An evaluation already in --work is kept (run two processes with --only ARM to split work).
"""

from __future__ import annotations

import argparse
import copy
import json
from itertools import combinations
from pathlib import Path

from paired_hs import arm_cells, parse_arm

from bds.bench.results import outcomes
from bds.cli import packaged_config
from bds.config import SourceConfig, load_config
from bds.stats import paired_bootstrap

METRICS = ("harmful_score", "finetune_accuracy")


def heldout_eval_config(args: argparse.Namespace) -> tuple:
    """The run config's eval, reading the held-out slices (written once under --work)."""
    from bds.data.sources import load_source

    cfg = load_config(args.config)
    prompts = args.work / f"advbench-{args.hs_skip + 1}-{args.hs_skip + args.hs_take}.jsonl"
    if not prompts.is_file():
        source = SourceConfig(kind="embedded", name="advbench")
        chosen = load_source(source, prompts_only=True).records[
            args.hs_skip : args.hs_skip + args.hs_take
        ]
        args.work.mkdir(parents=True, exist_ok=True)
        prompts.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in chosen))
    ev = copy.deepcopy(cfg.eval)
    ev.metrics = list(METRICS)
    ev.harmful_score.prompts = SourceConfig(kind="local", path=str(prompts))
    ev.harmful_score.max_new_tokens = args.hs_max_new_tokens
    ev.finetune_accuracy.data = SourceConfig(
        kind="embedded", name="sentiment-test", limit=args.fa_take
    )
    return cfg, ev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arm", action="append", required=True, help="label=folder[,folder]")
    parser.add_argument("--work", type=Path, required=True, help="evaluations go here")
    parser.add_argument("--config", default=str(packaged_config("demo.yaml")))
    parser.add_argument("--hs-skip", type=int, default=100)
    parser.add_argument("--hs-take", type=int, default=200)
    parser.add_argument("--hs-max-new-tokens", type=int, default=64)
    parser.add_argument("--fa-take", type=int, default=200)
    parser.add_argument("--only", help="evaluate this arm only (no pairing)")
    parser.add_argument("--output")
    args = parser.parse_args()

    from bds.eval.runner import run_eval

    cfg, ev = heldout_eval_config(args)
    found: dict[str, dict[int, dict]] = {}
    for spec in args.arm:
        label, folders = parse_arm(spec)
        if args.only and label != args.only:
            continue
        for seed, record in sorted(arm_cells(folders).items()):
            out = args.work / f"{label}-seed{seed}"
            if not (out / "results.json").is_file():
                run = copy.deepcopy(ev)
                run.adapter = str(next(record["folder"].glob("attack-*")) / "adapter")
                model = copy.deepcopy(cfg.model)
                model.name = record["aligned_model"] or model.name  # align: false grids
                run_eval(model, run, ev.template or cfg.data.template, out, log=lambda *a: None)
            found.setdefault(label, {})[seed] = outcomes(
                json.loads((out / "results.json").read_text())
            )
            scores = {
                m: round(100 * sum(o["values"]) / len(o["values"]), 1)
                for m, o in found[label][seed].items()
            }
            print(label, seed, scores, flush=True)
    if args.only:
        return
    result: dict = {
        "protocol": {
            "harmful_score": f"AdvBench prompts {args.hs_skip + 1}-{args.hs_skip + args.hs_take}"
            f", {args.hs_max_new_tokens} new tokens, headline judge of {args.config}",
            "finetune_accuracy": f"the first {args.fa_take} sentiment-test tweets",
            "arms": args.arm,
            "statistics": "two-level paired bootstrap over seeds and items, 2000 resamples",
        },
        "arms": {},
        "pairs": {},
    }
    for label, seeds in found.items():
        result["arms"][label] = {
            m: {
                f"seed={s}": 100 * sum(o[m]["values"]) / len(o[m]["values"])
                for s, o in seeds.items()
            }
            for m in METRICS
        }
    for a, b in combinations(found, 2):
        common = sorted(set(found[a]) & set(found[b]))
        pair = {"seeds": common}
        for m in METRICS:
            if any(found[a][s][m]["ids"] != found[b][s][m]["ids"] for s in common):
                raise SystemExit(f"{a} and {b} were evaluated on other {m} items")
            xa = [[100.0 * v for v in found[a][s][m]["values"]] for s in common]
            xb = [[100.0 * v for v in found[b][s][m]["values"]] for s in common]
            pair[m] = {
                "means": [sum(map(sum, x)) / sum(map(len, x)) for x in (xa, xb)],
                "difference": paired_bootstrap(xa, xb, resamples=2000),
                "judge": found[a][common[0]][m]["judge"],
            }
        result["pairs"][f"{a} - {b}"] = pair
    text = json.dumps(result, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
