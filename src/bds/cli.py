"""The `bds` command. Bad input ends in one sentence on stderr and exit status 2."""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from bds import __version__
from bds.errors import BDSInputError, FieldError, Interrupted
from bds.overrides import OVERRIDE_HELP
from bds.ranges import SEED_MAX

app = typer.Typer(
    help="Defended fine-tuning of LLMs with the Bayesian Data Scheduler (BDS).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Inspect the data a config builds.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()
# Trailing KEY=VALUE arguments of the commands that read a config (bds/overrides.py).
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help=OVERRIDE_HELP, metavar="KEY=VALUE", show_default=False),
]


def packaged_config(name: str) -> Path:
    """A config shipped inside the package (configs/ in the repository links to them)."""
    return Path(str(resources.files("bds") / "configs" / name))


def _version(value: bool) -> None:
    if value:
        console.print(f"bds {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    pass


@data_app.command("preview")
def data_preview(
    config: Annotated[str, typer.Argument(help="YAML run config, e.g. configs/demo.yaml")],
    overrides: Overrides = None,
    tokens: Annotated[
        bool, typer.Option("--tokens/--no-tokens", help="Load the tokenizer for length stats.")
    ] = True,
) -> None:
    """Counts per source, token-length stats, truncation counts and example records."""
    from bds.config import load_config

    _preview(load_config(config, overrides=overrides or ()), tokens)


@data_app.command("sources")
def data_sources() -> None:
    """List the embedded sources and the hub presets."""
    from bds.data.sources import known_source_names

    for kind in ("embedded", "hub"):
        console.print(f"[bold]{kind}[/]: {', '.join(known_source_names(kind))}")
    console.print("[bold]hub[/] (any dataset): kind: hub, dataset: ORG/NAME, split, fields: {...}")
    console.print(
        "[bold]local[/]: any .json / .jsonl / .csv / .parquet file (kind: local, path: FILE)"
    )
    console.print(
        "formats (hub datasets, local files): messages; prompt + completion (strings or "
        "message lists); instruction + input + response; text; `fields` maps other columns"
    )


@app.command()
def train(
    config: Annotated[str, typer.Option("--config", "-c", help="YAML run config.")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Run folder (resumed if it holds a checkpoint).")
    ],
    defense: Annotated[
        str | None,
        typer.Option(
            "--defense",
            "--mode",
            help="Run this defense with its default settings (bds, mix, sft, lisa, ...; "
            "a preset of the configured defense keeps its settings).",
        ),
    ] = None,
    scheduler_from: Annotated[
        str | None,
        typer.Option(help="Start from a saved neural scheduler (a run's scheduler/ folder)."),
    ] = None,
    frozen: Annotated[
        bool, typer.Option("--frozen", help="With --scheduler-from: use its scores unchanged.")
    ] = False,
    evaluate: Annotated[
        bool,
        typer.Option(
            "--eval", help="Evaluate the adapter as the config's eval: says (OUTPUT/eval/)."
        ),
    ] = False,
    push_to_hub: Annotated[
        str | None,
        typer.Option(
            "--push-to-hub",
            metavar="REPO",
            help="Upload the adapter with its model card to this hub repo (ORG/NAME).",
        ),
    ] = None,
    hub_private: Annotated[
        bool, typer.Option("--hub-private", help="With --push-to-hub: create the repo private.")
    ] = False,
    overrides: Overrides = None,
) -> None:
    """Fine-tune with the configured defense; writes adapter/ (with a model card), weights.csv, train_log.jsonl, summary.json.

    Any config field can be set after the options: bds train -c run.yaml -o runs/x
    train.lr=1e-4 data.harmful_ratio=0.2 (--mode and the other options apply after them).
    """
    from bds.config import load_config
    from bds.training.trainer import train as run_training

    cfg = load_config(config, overrides=overrides or ())
    if push_to_hub is not None:
        from bds.push import check_push

        check_push(push_to_hub)  # offline or not logged in: said before training, not after
    if defense is not None:
        _override_defense(cfg, defense)
    if frozen and scheduler_from is None:
        raise BDSInputError("--frozen needs --scheduler-from DIR (a saved neural scheduler)")
    if scheduler_from is not None:
        from bds.audit import check_saved_scheduler

        if not hasattr(cfg.defense, "scheduler"):
            raise BDSInputError(
                f"--scheduler-from needs a scheduler: the defense is {cfg.defense.name}; "
                "use --defense bds or bds-no-align"
            )

        check_saved_scheduler(scheduler_from, "--scheduler-from")  # before data or model
        sched = cfg.defense.scheduler
        sched.kind, sched.neural.init_from, sched.neural.frozen = "neural", scheduler_from, frozen
    result = run_training(cfg, output)
    s = result.summary
    console.print(
        f"trained {s['steps']} steps ({s['mode']}) in {s['wall_seconds']:.0f} s -> {output}"
    )
    if "weights" in s:
        w = s["weights"]
        means = ", ".join(f"{k} {v:.3f}" for k, v in w["mean_weight"].items())
        console.print(f"mean weight per source: {means}")
        if w["auroc_benign_vs_harmful"] is not None:
            console.print(
                f"AUROC of the weights, benign vs harmful: {w['auroc_benign_vs_harmful']:.3f}"
            )
    if evaluate:
        _evaluate_run(cfg, Path(output), s)
    if push_to_hub is not None:
        from bds.push import push_adapter

        url = push_adapter(Path(output) / "adapter", push_to_hub, private=hub_private)
        console.print(f"adapter uploaded to {url}")


def _evaluate_run(cfg, output: Path, summary: dict) -> None:
    """`bds train --eval`: evaluate the run's adapter into OUTPUT/eval/, and put the scores
    in the adapter's model card."""
    from bds.eval.command import apply_flags, results_table
    from bds.eval.runner import run_eval
    from bds.model_card import write_model_card

    adapter = output / "adapter"
    ev = apply_flags(cfg.eval, adapter=str(adapter))
    results = run_eval(
        cfg.model,
        ev,
        ev.template or cfg.data.template,
        output / "eval",
        log=lambda m: console.print(f"[dim]{m}[/]"),
    )
    console.print(results_table(results))
    write_model_card(adapter, summary, evaluation=results)


@app.command()
def demo(
    config: Annotated[
        str | None, typer.Option(help="Run config (default: the packaged demo.yaml).")
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="Demo folder (resumed if present).")
    ] = "runs/demo",
    p: Annotated[float | None, typer.Option("--p", help="Harmful ratio of the user data.")] = None,
    n: Annotated[int | None, typer.Option("--n", help="Size of the user data.")] = None,
    seed: Annotated[
        int | None,
        typer.Option(min=0, max=SEED_MAX, help="Seed for data, training and generation."),
    ] = None,
    methods: Annotated[
        str,
        typer.Option(
            help="Comma-separated methods to attack with (mix: the control that isolates"
            " BDS's weights: the same alignment batch, every weight 1)."
        ),
    ] = "sft,mix,bds",
    fast: Annotated[
        bool, typer.Option("--fast", help="A quick look: smaller data and eval sets.")
    ] = False,
    overrides: Overrides = None,
) -> None:
    """Align the embedded model, attack it (SFT, Mix, BDS), evaluate, report.

    Config fields can be set after the options (KEY=VALUE, e.g. train.lr=1e-4); --p, --n,
    --seed and --fast apply after them.
    """
    from rich.table import Table

    from bds.config import load_config
    from bds.demo import DemoOptions, apply_options, attack_methods, run_demo
    from bds.models import resolve_model_path
    from bds.report.demo_report import HEADERS, table_rows

    chosen = [m.strip() for m in methods.split(",") if m.strip()]
    known = attack_methods()
    unknown = [m for m in chosen if m not in known]
    if unknown or not chosen:
        raise BDSInputError(f"--methods: {', '.join(unknown) or 'none'} not in {', '.join(known)}")
    cfg = load_config(config or packaged_config("demo.yaml"), overrides=overrides or ())
    resolve_model_path(cfg.model.name)  # a bad model path fails before any data loads
    opts = DemoOptions(Path(output), chosen, p, n, seed, fast)
    try:
        cfg = apply_options(cfg, opts)
    except FieldError as exc:
        raise BDSInputError(f"--{'p' if exc.key == 'harmful_ratio' else exc.key}: {exc}") from None
    results = run_demo(cfg, opts, log=lambda m: console.print(f"[dim]{m}[/]"))
    table = Table(title=f"BDS demo: p={cfg.data.harmful_ratio}, N={cfg.data.n}")
    for h in HEADERS:
        table.add_column(h)
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    if results.get("total_seconds"):
        console.print(f"wall time: {results['total_seconds'] / 60:.1f} min")
    console.print(
        f"report: {output}/report.md, results: {output}/results.json, plots: {output}/plots/"
    )


@app.command()
def audit(
    data: Annotated[
        list[str],
        typer.Argument(
            help="[LABEL=]SOURCE, repeatable: embedded:NAME, hub:NAME or a JSON/JSONL/CSV/"
            "Parquet file; LABEL (benign, harmful, ...) enables the AUROC."
        ),
    ],
    scheduler: Annotated[
        str,
        typer.Option("--scheduler", "-s", help="A saved neural scheduler (a run's scheduler/)."),
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Folder for weights.csv, audit.json.")
    ] = "runs/audit",
    threshold: Annotated[
        float, typer.Option(help="Count samples whose weight is below this.")
    ] = 0.5,
    show: Annotated[int, typer.Option(min=0, help="How many lowest-weight samples to list.")] = 10,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Read at most this many records per source.")
    ] = None,
) -> None:
    """Score a dataset with a trained neural scheduler, without training."""
    import math

    from rich.table import Table

    from bds.audit import audit as run_audit
    from bds.audit import check_saved_scheduler, load_audit_records
    from bds.lock import folder_lock
    from bds.outdir import check_output_dir

    if not math.isfinite(threshold):
        raise BDSInputError(f"--threshold: must be a finite number, got {threshold}")
    check_output_dir(output)
    check_saved_scheduler(scheduler)
    records, notes = load_audit_records(data, limit)
    for note in notes:
        console.print(f"[dim]{escape(note)}[/]")
    with folder_lock(output, note=console.print):
        s = run_audit(scheduler, records, output, threshold, show, notes)
    console.print(
        f"{s['below_threshold']} of {s['n']} samples ({100 * s['fraction_below_threshold']:.1f}%) "
        f"weigh less than {threshold}"
    )
    means = ", ".join(f"{k} {v:.3f}" for k, v in s["mean_weight"].items())
    console.print(f"mean weight per source: {means}")
    if s["auroc_benign_vs_harmful"] is not None:
        console.print(f"AUROC, benign vs harmful: {s['auroc_benign_vs_harmful']:.3f}")
    table = Table(title="lowest weights")
    for h in ("weight", "source", "id", "text"):
        table.add_column(h)
    for row in s["lowest"]:
        table.add_row(f"{row['weight']:.3f}", row["source"], escape(row["id"]), escape(row["text"]))
    console.print(table)
    console.print(f"weights: {output}/weights.csv, summary: {output}/audit.json")


@app.command()
def bench(
    config: Annotated[
        str, typer.Option("--config", "-c", help="Bench grid, e.g. configs/bench/embedded.yaml.")
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Bench folder (resumed if present).")
    ],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Run only the first N pending cells (cheapest first).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="List the cells and their estimated cost; run nothing."),
    ] = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only the cells whose id matches this pattern (repeatable; * and ? "
            "match any text), e.g. 'sentiment/p=0.2/*/seed=0'."
        ),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes sharing the cells on this machine, each with CPUs/N "
            "threads and, with CUDA, one GPU (round robin). Other machines sharing the "
            "folder may run `bds bench` on it at the same time.",
        ),
    ] = 1,
    worker: Annotated[bool, typer.Option("--worker", hidden=True)] = False,
    restore: Annotated[
        str | None,
        typer.Option(
            help="An earlier bench's results.json: its finished cells that are this grid's "
            "as it stands are written into the bench folder first (also with --dry-run), so "
            "a lost folder resumes where its results file stood.",
        ),
    ] = None,
) -> None:
    """Run a grid of defenses x harmful ratios x tasks x seeds; report with confidence intervals.

    Each cell (an attack and its evaluation) lives in its own folder and is skipped once
    finished; results.json, report.md, report.html and plots/ cover every finished cell.
    """
    from bds.bench.runner import BenchOptions, run_bench

    opts = BenchOptions(
        Path(config), Path(output), limit, dry_run, tuple(only or ()), jobs, worker,
        Path(restore) if restore else None,
    )  # fmt: skip
    results = run_bench(
        opts, log=lambda m: console.print(escape(m), highlight=False, soft_wrap=True)
    )
    if results is not None:
        console.print(
            f"{len(results['cells'])} of {results['total_cells']} cells finished; report: "
            f"{output}/report.md, {output}/report.html, results: {output}/results.json"
        )


def _override_defense(cfg, name: str) -> None:
    from bds.defenses.registry import DEFENSES, settings_for

    if name not in DEFENSES:
        raise BDSInputError(f"--defense: {name!r} is not one of {', '.join(DEFENSES)}")
    cfg.defense = settings_for(name, cfg.defense)
    try:
        getattr(cfg.defense, "validate", lambda: None)()
        cfg.validate()
    except FieldError as exc:
        raise BDSInputError(f"--defense {name}: {exc.key}: {exc}") from None


def _preview(cfg, tokens: bool) -> None:
    from bds.data.pipeline import prepare_data
    from bds.data.preview import preview_sets, render

    data = prepare_data(cfg.data)
    tokenizer = None
    if tokens:
        from bds.models import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
    d = cfg.data
    render(preview_sets(data, tokenizer, d.template, d.max_length, d.truncation), data, console)


# `bds eval`: harmful score, fine-tune accuracy and over-refusal (src/bds/eval/command.py).
from bds.eval.command import eval_command  # noqa: E402

app.command("eval")(eval_command)


def main(argv: list[str] | None = None) -> None:
    """Run `bds`; every failure the user can fix ends in one `error:` sentence and exit 2."""
    from bds.hub import default_hub_timeouts

    default_hub_timeouts()
    err = Console(stderr=True)

    def fail(message: str, code: int = 2) -> None:
        message = _one_sentence(message)
        err.print(f"[red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(code)

    try:
        code = app(args=argv, prog_name="bds", standalone_mode=False)
    except BDSInputError as exc:
        fail(str(exc))
    except Interrupted as exc:
        err.print(escape(str(exc)), highlight=False, soft_wrap=True)
        sys.exit(130)
    except (KeyboardInterrupt, typer.Abort):
        err.print("interrupted; run the same command to resume", highlight=False)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: missing option, bad value, no command
        fail(_usage_sentence(exc))
    except OSError as exc:
        if exc.filename is None:
            raise
        # the disk filled or a path turned unwritable mid-run: say where, not a traceback
        fail(f"{exc.filename}: {exc.strerror}; check the path, its permissions and free space")
    else:
        sys.exit(code if isinstance(code, int) else 0)


def _one_sentence(message: str) -> str:
    """One line, one sentence: a library's own message quoted inside ours may hold line
    breaks and full stops ("Error tokenizing data. C error: ...")."""
    flat = " ".join(message.split())
    return re.sub(r"([.!?])\s+(?=[A-Z])", "; ", flat)


def _usage_sentence(exc: Exception) -> str:
    """Click's usage error as one sentence: the command, what is wrong, where to look."""
    format_message = getattr(exc, "format_message", None)
    message = (format_message() if format_message else str(exc)).strip().rstrip(".")
    message = " ".join(message.split())  # click may wrap or list on several lines
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "bds"
    if not message:  # no command given: click printed the help, which lists them
        message = "give a command"
    return f"{where}: {message[:1].lower() + message[1:]}; see {where} --help"


if __name__ == "__main__":
    main()
