"""Answers per second with one process at every thread or several at fewer, as
`bds bench --jobs N` runs them (bds/bench/workers.py).

Each variant K x T starts K processes at once, each at T torch threads, each answering the
same --prompts held-out harmful prompts (bds.eval.generate, the evaluation's own path:
greedy, --tokens new tokens, batch 32, longest first, shared prefix) with --model
(+ --adapter); throughput = K * prompts / the slowest process's generation time (model
loading excluded), the median of --repeats runs (variants interleaved, so a slow spell of
the machine falls on all of them). Also counts each process's answers identical to the first variant's
(thread counts can round differently; greedy answers then change).

    python benchmarks/worker_throughput.py --output benchmarks/results/worker_throughput.json
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/worker_throughput.py \\
        --output benchmarks/results/worker_throughput_avx2.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_rows  # noqa: E402


def child(args: argparse.Namespace) -> None:
    """One process: load, answer, print {"seconds", "answers"} as JSON."""
    import torch

    from bds.config import ModelConfig
    from bds.data.embedded import advbench
    from bds.eval.generate import generate, load_generator
    from bds.precision import resolve_generation_dtype

    dtype, reason = resolve_generation_dtype(args.dtype)
    model, tokenizer = load_generator(ModelConfig(name=args.model, dtype=dtype), args.adapter)
    records = advbench().records[100 : 100 + args.prompts]
    started = time.perf_counter()
    got = generate(model, tokenizer, records, "alpaca", args.tokens, batch_size=32, desc="answers")
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "answers": [g.output for g in got],
                      "threads": torch.get_num_threads(), "dtype": dtype, "dtype_reason": reason}))  # fmt: skip


def run_variant(args: argparse.Namespace, processes: int, threads: int) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    argv = [sys.executable, __file__, "--child", "--model", args.model, "--dtype", args.dtype,
            "--prompts", str(args.prompts), "--tokens", str(args.tokens)]  # fmt: skip
    if args.adapter:
        argv += ["--adapter", args.adapter]
    procs = [
        subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a {processes} x {threads} process failed; run it with --child")
    return [json.loads(o.decode().strip().splitlines()[-1]) for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded:smollm2-135m-instruct")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default="benchmarks/results/worker_throughput.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    cpus = len(os.sched_getaffinity(0))
    variants = [(k, cpus // k) for k in range(1, cpus + 1) if cpus % k == 0]
    runs: dict[tuple[int, int], list[list[dict]]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for processes, threads in variants:
            runs[(processes, threads)].append(run_variant(args, processes, threads))
    first = runs[variants[0]][0][0]["answers"]
    rows = []
    for (processes, threads), repeats in runs.items():
        rates = [processes * args.prompts / max(r["seconds"] for r in rep) for rep in repeats]
        row = {
            "processes": processes,
            "threads_each": threads,
            "dtype": repeats[0][0]["dtype"],
            "seconds_per_process": [[round(r["seconds"], 1) for r in rep] for rep in repeats],
            "answers_per_second_runs": [round(x, 2) for x in rates],
            "answers_per_second": round(statistics.median(rates), 2),
            "same_answers_as_first_variant": sorted(
                {
                    sum(a == b for a, b in zip(first, r["answers"], strict=True))
                    for rep in repeats
                    for r in rep
                }
            ),  # fmt: skip
        }
        rows.append(row)
        print(row, flush=True)
    base = rows[0]["answers_per_second"]
    for row in rows:
        row["speedup_vs_one_process"] = round(row["answers_per_second"] / base, 2)
    protocol = {
        "model": args.model,
        "adapter": args.adapter,
        "dtype": args.dtype,
        "prompts": f"AdvBench {100}-{100 + args.prompts - 1} (alpaca template)",
        "new_tokens_max": args.tokens,
        "batch_size": 32,
        "repeats": args.repeats,
        "cpus": cpus,
        "env": {
            k: os.environ[k]
            for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
            if k in os.environ
        },
    }
    write_rows(Path(args.output), "worker_throughput", rows, protocol)


if __name__ == "__main__":
    main()
