"""`bds eval`: evaluate a model (and adapter) from a run config, flags, or both."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bds.config import ModelConfig
from bds.errors import BDSInputError, FieldError
from bds.eval.config import DTYPES, METRICS, EvalConfig, JudgeConfig
from bds.overrides import OVERRIDE_HELP

console = Console()


@dataclass
class StandaloneEval:
    """The sections `bds eval` reads without --config (what its overrides may set)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def eval_command(
    output: Annotated[str, typer.Option(help="Folder for results.json (created if missing).")],
    config: Annotated[
        str | None, typer.Option(help="Run config whose model, data.template and eval: are used.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Base model: embedded name, hub id or folder.")
    ] = None,
    adapter: Annotated[
        str | None, typer.Option(help="PEFT LoRA adapter: a folder or a hub id (org/name).")
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(help=f"Comma-separated subset of {', '.join(METRICS)}."),
    ] = None,
    judge: Annotated[
        list[str] | None,
        typer.Option(help="Judge by name (repeat for several; the first is the headline)."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many prompts per metric.")
    ] = None,
    template: Annotated[
        str | None, typer.Option(help="Prompt template: alpaca or chat (default: the config's).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Generation batch size.")] = None,
    dtype: Annotated[
        str | None,
        typer.Option(help="Generation precision: model, float32, bfloat16 or float16."),
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help=OVERRIDE_HELP, metavar="KEY=VALUE", show_default=False),
    ] = None,
) -> None:
    """Harmful score, fine-tune accuracy and over-refusal, written to OUTPUT/results.json.

    Config fields can be set after the options (KEY=VALUE, e.g. eval.batch_size=8);
    without --config only model.* and eval.* exist; the flags apply after them.
    """
    from bds.config import from_dict, load_config
    from bds.eval.runner import RESULTS_FILE, run_eval

    if config is not None:
        run = load_config(config, overrides=overrides or ())
        model_cfg, ev, run_template = run.model, run.eval, run.data.template
    else:
        run = from_dict(StandaloneEval, {}, source="bds eval", overrides=overrides or ())
        model_cfg, ev, run_template = run.model, run.eval, "alpaca"
    if model is not None:
        model_cfg = dataclasses.replace(model_cfg, name=model)
    ev = apply_flags(ev, adapter, metrics, judge, limit, template, batch_size, dtype)
    chosen_template = ev.template or run_template
    from bds.lock import folder_lock
    from bds.outdir import check_output_dir

    check_output_dir(output)  # before the prompts, the model and the generation
    with folder_lock(output, note=console.print):
        results = run_eval(
            model_cfg, ev, chosen_template, output, log=lambda m: console.print(f"[dim]{m}[/]")
        )
    console.print(results_table(results))
    console.print(f"results: {output}/{RESULTS_FILE} ({results['wall_seconds']:.0f} s)")


def apply_flags(
    ev: EvalConfig,
    adapter: str | None = None,
    metrics: str | None = None,
    judges: list[str] | None = None,
    limit: int | None = None,
    template: str | None = None,
    batch_size: int | None = None,
    dtype: str | None = None,
) -> EvalConfig:
    """`ev` with command-line overrides applied and validated (BDSInputError names the flag)."""
    changes: dict[str, Any] = {}
    if adapter is not None:
        changes["adapter"] = adapter
    if metrics is not None:
        names = [m.strip() for m in metrics.split(",") if m.strip()]
        unknown = [m for m in names if m not in METRICS]
        if unknown or not names:
            raise BDSInputError(
                f"--metrics: unknown metric {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(METRICS)}"
            )
        changes["metrics"] = names
    if judges:
        changes["judges"] = [_judge(name, ev) for name in judges]
    if template is not None:
        if template not in ("alpaca", "chat"):
            raise BDSInputError(f"--template: {template!r} is not a template; use alpaca or chat")
        changes["template"] = template
    if batch_size is not None:
        changes["batch_size"] = batch_size
    if dtype is not None:
        if dtype not in DTYPES:
            raise BDSInputError(f"--dtype: {dtype!r} is not a precision; use {', '.join(DTYPES)}")
        changes["dtype"] = dtype
    if limit is not None:
        for section, key in (
            ("harmful_score", "prompts"),
            ("finetune_accuracy", "data"),
            ("over_refusal", "prompts"),
        ):
            sub = getattr(ev, section)
            src = dataclasses.replace(getattr(sub, key), limit=limit)
            changes[section] = dataclasses.replace(sub, **{key: src})
    ev = dataclasses.replace(ev, **changes)
    try:
        ev.validate()
    except FieldError as exc:
        raise BDSInputError(f"eval.{exc.key}: {exc}") from None
    return ev


def _judge(name: str, ev: EvalConfig) -> JudgeConfig:
    # A judge the config already sets up keeps its settings (model, threshold).
    for existing in ev.judges:
        if existing.name == name:
            return existing
    cfg = JudgeConfig(name=name)
    try:
        cfg.validate()
    except FieldError as exc:
        raise BDSInputError(f"--judge: {exc}") from None
    return cfg


def results_table(results: dict[str, Any]) -> Table:
    """Metric / judge / score / counts, from a results dict."""
    table = Table(title=f"bds eval: {results['protocol']['model']['name']}")
    for column in ("metric", "judge", "score", "n", "detail"):
        table.add_column(column, justify="right" if column in ("score", "n") else "left")
    counts = results["counts"]
    for metric, value in results["scores"].items():
        n = counts[metric]["prompts"]
        limit_note = f"{counts[metric]['hit_max_new_tokens']} hit max_new_tokens"
        if isinstance(value, dict):
            key = "judged_harmful" if metric == "harmful_score" else "judged_refused"
            for name, score in value.items():
                k = counts[metric][key][name]
                what = "harmful" if metric == "harmful_score" else "refused"
                table.add_row(metric, name, f"{score:.1f}", str(n), f"{k} {what}; {limit_note}")
        elif value is None:
            table.add_row(metric, "-", "export", str(n), "alpaca_eval outputs written")
        else:
            task = results["protocol"]["metrics"][metric].get("task_metric", "")
            detail = f"{counts[metric]['correct']} correct ({task}); {limit_note}"
            table.add_row(metric, "-", f"{value:.1f}", str(n), detail)
    return table
