"""Wall time of `bds demo` per stage, as a new user meets it: a fresh clone, an empty cache.

For each variant:
  shipped  the clone as it is: the package's aligned adapter (bds/aligned_asset.py) is merged
           in, so the alignment stage costs seconds;
  built    the clone without src/bds/shipped/aligned: the alignment stage runs (the base
           model's retain answers, then the alignment SFT and the merge).
Each variant:
  1. set-up, reported apart: `git clone` of --repo (its committed HEAD) into a temporary
     folder; with --setup also `make setup` there (a venv: needs the package registry);
  2. `python -m bds.cli demo --output OUT [--demo-args]` run from the clone's src/, with
     BDS_CACHE an empty temporary folder (so the base model is converted from its GGUF, the
     judge installed, ... as on a first run) and the hubs offline;
  3. per stage: the demo's own stage_seconds.json (align, attack-<method>, eval-<name>); the
     align stage split into retain answers and alignment SFT (+ merge) by the time each log
     line arrived. The retain answers include the one-off conversion of the base model into
     the empty cache (the generator loads it first).
The machine record (benchmarks/common.py) names the CPU and torch's CPU capability. On a
shared CPU the times are inflated: the record keeps the load average before and after.

    python benchmarks/demo_time.py --output benchmarks/results/demo_time.json
    # a CPU with native bf16 made to behave as an AVX2 one (bf16 then emulated, so `auto`
    # picks fp32):
    python benchmarks/demo_time.py --avx2 --output benchmarks/results/demo_time_avx2.json

Rows already in --output (same variant and --avx2) are kept and not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import previous_rows, write_rows

REPO = Path(__file__).resolve().parents[1]
ASSET = Path("src/bds/shipped/aligned")
VARIANTS = ("shipped", "built")
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
    "COLUMNS": "400",  # rich wraps log lines at 80 columns when not on a terminal
}
# Log lines (bds/align.py) that mark where the align stage's parts begin.
RETAIN_START = "align: the base model answers"
SFT_START = "align: fine-tuning"
SHIPPED_USED = "align: using the shipped aligned adapter"


def clone(repo: Path, dest: Path, variant: str) -> dict[str, float]:
    """A fresh clone of `repo` at `dest` for `variant`; the seconds it took."""
    t0 = time.perf_counter()
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(repo), str(dest)], check=True)
    if variant == "built":
        shutil.rmtree(dest / ASSET, ignore_errors=True)
    return {"clone": round(time.perf_counter() - t0, 1)}


def make_setup(dest: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(["make", "setup"], cwd=dest, check=True)
    return round(time.perf_counter() - t0, 1)


def demo_env(dest: Path, cache: Path, avx2: bool) -> dict[str, str]:
    env = {**os.environ, **OFFLINE_ENV, "BDS_CACHE": str(cache), "PYTHONPATH": str(dest / "src")}
    return {**env, **AVX2_ENV} if avx2 else env


def check_imports_clone(python: str, dest: Path, env: dict[str, str]) -> None:
    """An installed bds (e.g. editable) must not shadow the clone's."""
    found = subprocess.run(
        [python, "-c", "import bds; print(bds.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to((dest / "src").resolve()):
        raise SystemExit(f"{python} imports bds from {found}, not from the clone {dest}")


def demo_command(python: str, output: Path, demo_args: list[str]) -> list[str]:
    return [python, "-m", "bds.cli", "demo", "--output", str(output), *demo_args]


def run_timed(command: list[str], env: dict[str, str], log_file: Path) -> tuple[int, float, list]:
    """Run `command`, keeping each output line with the seconds since start it arrived at."""
    t0 = time.perf_counter()
    lines: list[tuple[float, str]] = []
    with (
        log_file.open("w") as log,
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc,
    ):
        for line in proc.stdout:
            at = time.perf_counter() - t0
            log.write(f"[{at:8.1f}] {line}")
            lines.append((at, line.strip()))
        code = proc.wait()
    return code, round(time.perf_counter() - t0, 1), lines


def first_at(lines: list[tuple[float, str]], prefix: str) -> float | None:
    return next((at for at, line in lines if line.startswith(prefix)), None)


def align_parts(stage_seconds: dict[str, float], lines: list) -> dict[str, float | str]:
    """The align stage split by its log lines: retain answers and SFT (+ merge) when it was
    built, or the shipped adapter's merge."""
    align = stage_seconds.get("align")
    if align is None:
        return {}
    if first_at(lines, SHIPPED_USED) is not None:
        return {"how": "shipped adapter merged", "merge_shipped_adapter": align}
    retain, sft = first_at(lines, RETAIN_START), first_at(lines, SFT_START)
    if sft is None:
        return {"how": "unknown (no alignment log lines)"}
    parts: dict[str, float | str] = {"how": "built"}
    if retain is not None:
        parts["retain_answers"] = round(sft - retain, 1)
    parts["alignment_sft_and_merge"] = round(align - parts.get("retain_answers", 0.0), 1)
    return parts


def headline(results: dict) -> dict[str, dict[str, float | None]]:
    """HS / FA / over-refusal (headline judge) per method, to compare with other runs."""
    return {
        name: {k: v.get("value") for k, v in row["headline"].items()}
        for name, row in results.get("methods", {}).items()
    }


def run_variant(args: argparse.Namespace, variant: str, work: Path) -> dict:
    dest, cache, output = work / "clone", work / "cache", work / "demo"
    setup = clone(args.repo, dest, variant)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=dest, capture_output=True, text=True, check=True
    ).stdout.strip()
    if args.setup:
        setup["make_setup"] = make_setup(dest)
    python = str(dest / ".venv" / "bin" / "python") if args.setup else args.python
    env = demo_env(dest, cache, args.avx2)
    check_imports_clone(python, dest, env)
    load_before = os.getloadavg()
    code, wall, lines = run_timed(
        demo_command(python, output, args.demo_args), env, work / "demo.log"
    )
    if code != 0:
        tail = "\n".join(line for _, line in lines[-20:])
        raise SystemExit(f"bds demo ({variant}) exited {code}; its last lines:\n{tail}")
    stage_seconds = json.loads((output / "stage_seconds.json").read_text())
    results = json.loads((output / "results.json").read_text())
    return {
        "variant": variant,
        "avx2_emulated": args.avx2,
        "commit": commit,
        "demo_args": args.demo_args,
        "setup_seconds": setup,
        "demo_wall_seconds": wall,
        "stage_seconds": stage_seconds,
        "stages_total_seconds": round(sum(stage_seconds.values()), 1),
        "align_parts": align_parts(stage_seconds, lines),
        "outside_stages_seconds": round(wall - sum(stage_seconds.values()), 1),
        "scores": headline(results),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks/results/demo_time.json")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="shipped,built")
    parser.add_argument("--repo", type=Path, default=REPO, help="the repository to clone")
    parser.add_argument("--python", default=sys.executable, help="runs the demo (unless --setup)")
    parser.add_argument("--setup", action="store_true", help="run `make setup` in the clone")
    parser.add_argument("--avx2", action="store_true", help=f"demo env gets {AVX2_ENV}")
    parser.add_argument("--demo-args", nargs=argparse.REMAINDER, default=[])
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: choose from {', '.join(VARIANTS)}")
    rows = previous_rows(args.output)
    done = {(r["variant"], r["avx2_emulated"], tuple(r["demo_args"])) for r in rows}
    for variant in variants:
        if (variant, args.avx2, tuple(args.demo_args)) in done:
            print(f"{variant}: in {args.output} already, kept")
            continue
        with tempfile.TemporaryDirectory(prefix=f"bds-demo-time-{variant}-") as tmp:
            row = run_variant(args, variant, Path(tmp))
        rows.append(row)
        print(json.dumps(row, indent=2))
        protocol = {
            "what": "bds demo on a fresh clone with an empty BDS_CACHE, per stage",
            "command": " ".join(["python", "benchmarks/demo_time.py", *(argv or sys.argv[1:])]),
        }
        write_rows(args.output, "demo_time", rows, protocol)


if __name__ == "__main__":
    main()
