"""`bds demo`: BDS defending where plain fine-tuning fails, on the embedded default.

Stages, each leaving files that mark it done (an interrupted demo resumes at the first
missing one):
  1. align   fine-tune the base model on the alignment set (+ the retain set of `align:`),
             merge the adapter (bds/align.py; cached in $BDS_CACHE/aligned/<key>, reused
             by later demos with the same settings);
  2. attack  fine-tune the aligned model on the user data (harmful ratio p), once per
             method: sft, mix, bds, ...          -> OUTPUT/attack-<method>/
  3. eval    harmful score, sentiment accuracy and over-refusal of the aligned model and
             of each attacked one          -> OUTPUT/eval-<name>/results.json
  4. report  OUTPUT/results.json, OUTPUT/report.md, OUTPUT/plots/*.png
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bds.align import align_stage, saved_retain
from bds.config import RunConfig
from bds.data.pipeline import PreparedData, prepare_data
from bds.io import write_json


def attack_methods() -> list[str]:
    """The defenses an attack stage can run (registered fine-tuning, data-filter and
    post-fine-tuning ones)."""
    from bds.defenses.registry import ATTACK_STAGES, defense_names

    return defense_names(*ATTACK_STAGES)


@dataclass
class DemoOptions:
    output: Path
    # mix is the control: the same alignment batch as BDS, every user weight 1, so BDS - Mix
    # is what the scheduler's weights add (issue 13)
    methods: list[str] = field(default_factory=lambda: ["sft", "mix", "bds"])
    harmful_ratio: float | None = None
    n: int | None = None
    seed: int | None = None
    fast: bool = False


def apply_options(cfg: RunConfig, opts: DemoOptions) -> RunConfig:
    """The run config with the command line's overrides and the --fast profile applied."""
    cfg = copy.deepcopy(cfg)
    if opts.harmful_ratio is not None:
        cfg.data.harmful_ratio = opts.harmful_ratio
    if opts.n is not None:
        cfg.data.n = opts.n
    if opts.seed is not None:
        cfg.data.seed = cfg.train.seed = cfg.eval.seed = opts.seed
    if opts.fast:  # a quick look: fewer samples, shorter answers, smaller eval sets
        cfg.data.n = min(cfg.data.n, 60)
        cfg.train.epochs = min(cfg.train.epochs, 2)
        cfg.eval.harmful_score.prompts.limit = 24
        cfg.eval.harmful_score.max_new_tokens = 48
        cfg.eval.finetune_accuracy.data.limit = 60
        cfg.eval.over_refusal.prompts.limit = 20
        cfg.eval.over_refusal.max_new_tokens = 32
    cfg.data.validate()
    return cfg


DEMO_IDENTITY_FILE = "demo.json"


def run_demo(cfg: RunConfig, opts: DemoOptions, log: Any = print) -> dict[str, Any]:
    from bds.lock import folder_lock
    from bds.outdir import check_output_dir

    check_output_dir(opts.output)
    with folder_lock(opts.output, note=log):
        return _run_demo(cfg, opts, log)


def _claim(out: Path, cfg: RunConfig, data: PreparedData) -> None:
    """The folder keeps the demo's inputs (config with --p/--n/--seed/--fast applied, data,
    model, code); a demo with other inputs is refused rather than shown old results."""
    from bds.run_identity import check_same_run, run_identity

    identity = run_identity(cfg, data, ignore=("output_dir", "train.log_steps", "train.report_to"))
    stages = [STAGE_TIMES_FILE, "results.json", "align"]
    stages += [p.name for p in out.glob("attack-*")] + [p.name for p in out.glob("eval-*")]
    has_work = any((out / name).exists() for name in stages)
    check_same_run(out, identity, "--output", has_work=has_work, file=DEMO_IDENTITY_FILE)
    write_json(out / DEMO_IDENTITY_FILE, identity)


def _run_demo(cfg: RunConfig, opts: DemoOptions, log: Any) -> dict[str, Any]:
    out = opts.output
    data = prepare_data(cfg.data)
    _claim(out, cfg, data)
    clock = StageClock(out / STAGE_TIMES_FILE)
    aligned = clock.run("align", lambda: align_stage(cfg, data, log))
    runs = {}
    for method in opts.methods:
        runs[method] = clock.run(
            f"attack-{method}", lambda m=method: attack_stage(cfg, data, aligned, m, out, log)
        )
    evals = {
        "aligned": clock.run(
            "eval-aligned", lambda: eval_stage(cfg, aligned, None, out / "eval-aligned", log)
        )
    }
    for method, run_dir in runs.items():
        evals[method] = clock.run(
            f"eval-{method}",
            lambda m=method, d=run_dir: eval_stage(
                cfg, aligned, d / "adapter", out / f"eval-{m}", log
            ),
        )
    from bds.report.demo_report import write_report

    return write_report(cfg, opts, aligned, runs, evals, out, clock.times)


STAGE_TIMES_FILE = "stage_seconds.json"


class StageClock:
    """Wall seconds of each stage, kept in the demo folder: a stage finished by an earlier
    (interrupted) invocation keeps the time it took then, so the total is a whole run's."""

    def __init__(self, path: Path):
        self.path = path
        self.times: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def run(self, name: str, fn: Any) -> Any:
        import time

        t0 = time.perf_counter()
        result = fn()
        if name not in self.times:
            self.times[name] = round(time.perf_counter() - t0, 1)
            self.path.write_text(json.dumps(self.times, indent=2))
        return result


# ------------------------------------------------------------------ stages -------------


def attack_stage(
    cfg: RunConfig, data: PreparedData, aligned: Path, method: str, out: Path, log: Any
) -> Path:
    """Fine-tune the aligned model on D_ft with one method; skipped if already done."""
    from bds.defenses.registry import settings_for
    from bds.run_identity import is_finished_run, run_identity
    from bds.training.trainer import train

    run_dir = out / f"attack-{method}"
    tcfg = copy.deepcopy(cfg)
    tcfg.model.name = str(aligned)
    # the configured defense's settings where `method` is a preset of it (bds-neural keeps
    # the scheduler's), else the method's defaults
    tcfg.defense = settings_for(method, cfg.defense)
    retain = []
    if cfg.align.retain_in_alignment_set and "alignment" in tcfg.defense.needs:
        retain = saved_retain(aligned)
        data = dataclasses.replace(data, alignment=list(data.alignment) + retain)
    if is_finished_run(run_dir, run_identity(tcfg, data)):  # same inputs, same result
        log(f"attack ({method}): done before, kept")
        return run_dir
    log(f"attack ({method}): {data.mix.n_harmful} harmful + {data.mix.n_benign} benign samples")
    if retain:
        log(
            f"attack ({method}): alignment set = {len(data.alignment) - len(retain)} D_safe + "
            f"{len(retain)} retain samples"
        )
    train(tcfg, run_dir, data=data)
    return run_dir


def eval_stage(
    cfg: RunConfig,
    aligned: Path,
    adapter: Path | None,
    out: Path,
    log: Any,
    keep_answers: bool = False,
) -> dict:
    """Evaluate the aligned model (+ an attack's adapter) into `out`; skipped if done. The
    aligned model's answers shipped with it (bds/aligned_asset.py) are used where they were
    generated for the same prompts and settings."""
    from bds.align import ANSWERS_DIR
    from bds.eval.runner import PARTIAL_DIR, RESULTS_FILE, run_eval

    if (out / RESULTS_FILE).is_file():
        log(f"eval: {out.name} done before, kept")
        return json.loads((out / RESULTS_FILE).read_text())
    ev = copy.deepcopy(cfg.eval)
    ev.adapter = str(adapter) if adapter else None
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.name = str(aligned)
    log(f"eval: {out.name}")
    if adapter is None and (aligned / ANSWERS_DIR).is_dir():
        _seed_journals(aligned / ANSWERS_DIR, out / PARTIAL_DIR, log)
    return run_eval(
        model_cfg,
        ev,
        ev.template or cfg.data.template,
        out,
        log=log,
        identity=aligned_identity(aligned),
        keep_journals=keep_answers,
    )


def aligned_identity(aligned: Path) -> str:
    """The aligned model's name in its answers' journal keys: its cache key, which names the
    same model on every machine (its path does not)."""
    return f"aligned/{aligned.name}"


def _seed_journals(answers: Path, partial: Path, log: Any) -> None:
    """Copy the shipped answers into the evaluation's journal folder (a journal there
    already, from an interrupted run, is kept). Their key decides whether they are used."""
    import shutil

    copied = []
    for journal in sorted(answers.glob("*.jsonl")):
        if not (partial / journal.name).exists():
            partial.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(journal, partial / journal.name)
            copied.append(journal.stem)
    if copied:
        log(
            f"eval: the aligned model's shipped answers ({', '.join(copied)}) are used where their settings match"
        )
