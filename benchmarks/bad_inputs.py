"""A battery of bad inputs, as a new user would try them, across every command.

Each case runs `bds ...` in its own process (forked from this one, so the heavy imports
happen once) with a timeout, and is classed by how it ended:
  ok          exit 2, one `error:` line of one sentence, no traceback, nothing finished left;
  traceback   a Python traceback reached the user;
  hang        still running at the timeout (killed);
  exit0       exit status 0 on input that should have been refused;
  other       any other ending (another exit status, several sentences, a finished-looking
              output folder left behind).
Prints the table and writes benchmarks/results/bad_inputs.json.

    python benchmarks/bad_inputs.py [--only SUBSTRING] [--keep DIR]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RESULTS = Path(__file__).resolve().parent / "results" / "bad_inputs.json"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SENTENCE_BREAK = re.compile(r"[.!?]\s+[A-Z]")
FINISHED = ("summary.json", "results.json", "audit.json", "report.md")


@dataclass
class Case:
    name: str
    klass: str
    argv: list[str]
    setup: Callable[[Path], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    out: str | None = None  # an output folder that must not look finished afterwards
    timeout: float = 60.0
    fresh: bool = False  # a new interpreter (hub settings are read when the hub is imported)


# ------------------------------------------------------------------ fixtures -------------


def _records(n: int, prefix: str, response: str = "answer") -> list[dict[str, str]]:
    return [
        {"id": f"{prefix}/{i}", "instruction": f"{prefix} question {i}", "response": response}
        for i in range(n)
    ]


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def make_fixtures(root: Path) -> dict[str, Any]:
    """Good data, a tiny model folder and a valid config; every case breaks one thing."""
    from bds.tiny import save_tiny_checkpoint

    root.mkdir(parents=True, exist_ok=True)
    fx: dict[str, Any] = {"root": root}
    fx["benign"] = _jsonl(root / "benign.jsonl", _records(30, "benign"))
    fx["harmful"] = _jsonl(root / "harmful.jsonl", _records(10, "harmful"))
    fx["safe"] = _jsonl(root / "safe.jsonl", _records(12, "safe", "I can't help with that."))
    labelled = [
        {"instruction": "Say the label.", "input": f"text {i}", "response": "positive"}
        for i in range(6)
    ]
    fx["labelled"] = _jsonl(root / "labelled.jsonl", labelled)
    fx["model"] = str(save_tiny_checkpoint(root / "tiny-model"))
    fx["other_model"] = str(root / "other-model")
    _save_other_tiny(Path(fx["other_model"]))

    def local(path: str, label: str | None = None) -> dict[str, Any]:
        return {"kind": "local", "path": path, **({"label": label} if label else {})}

    fx["config"] = {
        "model": {"name": fx["model"]},
        "data": {
            "benign": local(fx["benign"], "benign"),
            "harmful": local(fx["harmful"], "harmful"),
            "alignment": local(fx["safe"]),
            "n": 20,
            "harmful_ratio": 0.2,
            "max_length": 64,
        },
        "defense": {"name": "bds"},
        "train": {
            "max_steps": 2,
            "batch_size": 4,
            "alignment_batch_size": 4,
            "mixed_precision": "no",
            "log_steps": 1,
            "trajectory_steps": 1,
            "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]},
        },
        "eval": {
            "judges": [{"name": "keyword"}],
            "harmful_score": {"prompts": local(fx["harmful"]), "max_new_tokens": 2},
            "finetune_accuracy": {
                "data": local(fx["labelled"], "benign"),
                "metric": "label",
                "max_new_tokens": 2,
            },
            "over_refusal": {"prompts": local(fx["benign"]), "max_new_tokens": 2},
        },
    }
    fx["good_yaml"] = write_config(root / "good.yaml", fx["config"])
    return fx


def _save_other_tiny(folder: Path) -> None:
    """A tiny model of other shapes: adapters of the first do not fit it."""
    from bds.tiny import build_tiny_model, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    model = build_tiny_model("llama", vocab_size=len(tok))
    cfg = model.config
    cfg.hidden_size, cfg.intermediate_size = cfg.hidden_size * 2, cfg.intermediate_size * 2
    type(model)(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


def write_config(path: Path, cfg: dict[str, Any]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return str(path)


def with_value(cfg: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(cfg)
    *parents, last = dotted.split(".")
    node = cfg
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[last] = value
    return cfg


# ------------------------------------------------------------------ cases ----------------

NAN, INF = float("nan"), float("inf")
# field -> bad values (each refused at config load)
NUMERIC = {
    "train.lr": [NAN, INF, -INF, 0, -1e-3],
    "train.epochs": [NAN, INF, -1],
    "train.seed": [-1, 2**40],
    "train.weight_decay": [NAN, -0.1],
    "train.warmup_steps": [-5],
    "train.lora.alpha": [NAN, 0, -4],
    "train.lora.r": [0],
    "train.lora.dropout": [NAN, 1.0, -0.1],
    "train.batch_size": [0, -4],
    "train.max_steps": [0, -1],
    "train.save_steps": [0],
    "train.gradient_accumulation_steps": [0],
    "train.log_steps": [0],
    "defense.scheduler.init_logit": [NAN, INF],
    "defense.scheduler.lr": [NAN, INF, 0],
    "defense.scheduler.temperature": [NAN, -1],
    "defense.scheduler.seed": [-3],
    "defense.scheduler.average_last": [0],
    "defense.scheduler.sgld_beta": [NAN, 1.0],
    "defense.scheduler.betas": [[NAN, 0.9], [0.9], [1.0, 0.5]],
    "defense.scheduler.priors.0.std": [NAN, 0, -1],
    "defense.scheduler.priors.0.strength": [NAN, -1],
    "defense.scheduler.priors.0.target_fraction": [NAN, 0, 2],
    "defense.scheduler.neural.encoder_lr": [NAN, 0],
    "defense.scheduler.neural.lora_alpha": [NAN, 0],
    "data.n": [0, -5, 10**30],
    "data.harmful_ratio": [NAN, INF, -0.1, 1.5],
    "data.max_length": [8, -1],
    "data.seed": [-1, NAN],
    "data.n_alignment": [0],
    "align.lr": [NAN, 0],
    "align.epochs": [0],
    "align.retain_max_new_tokens": [0],
    "eval.batch_size": [0],
    "eval.seed": [-2],
    "eval.judges.0.batch_size": [0],
    "eval.harmful_score.max_new_tokens": [0],
}


def numeric_cases(fx: dict[str, Any]) -> list[Case]:
    cases = []
    for dotted, values in NUMERIC.items():
        if dotted.startswith("defense.scheduler.priors"):
            base = with_value(fx["config"], "defense.scheduler.priors", [{"kind": "gaussian"}])
        else:
            base = fx["config"]
        for k, value in enumerate(values):
            path = fx["root"] / "numeric" / f"{dotted}-{k}.yaml"
            path.parent.mkdir(exist_ok=True)
            cfg = write_config(path, with_value(base, dotted, value))
            # half through `data preview`, half through `train` (both load the config first)
            if k % 2:
                argv = ["train", "-c", cfg, "-o", str(fx["root"] / "out" / f"{dotted}-{k}")]
                out = argv[-1]
            else:
                argv, out = ["data", "preview", cfg, "--no-tokens"], None
            cases.append(Case(f"{dotted}={value!r}", "numeric field", argv, out=out))
    return cases


def text(fx: dict[str, Any], name: str, content: str | bytes) -> str:
    path = fx["root"] / "files" / name
    path.parent.mkdir(exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def config_cases(fx: dict[str, Any]) -> list[Case]:
    good = Path(fx["good_yaml"]).read_text(encoding="utf-8")
    r = fx["root"]
    bad = {
        "missing config": str(r / "nope.yaml"),
        "config is a folder": str(r),
        "latin-1 byte in config": text(fx, "latin1.yaml", good.encode() + b"# caf\xe9\n"),
        "binary config": text(fx, "binary.yaml", bytes(range(256))),
        "UTF-16 config": text(fx, "utf16.yaml", good.encode("utf-16")),
        "lone surrogate escape": text(fx, "surrogate.yaml", good + 'output_dir: "\\ud800"\n'),
        "YAML syntax": text(fx, "syntax.yaml", good + "train: [1, 2\n"),
        "bad indentation": text(fx, "indent.yaml", good.replace("  n: 20", "   n: 20")),
        "unknown key": text(fx, "unknown.yaml", good.replace("  n: 20", "  nn: 20")),
        "wrong type": text(fx, "type.yaml", good.replace("  n: 20", "  n: many")),
        "bool for int": text(fx, "bool.yaml", good.replace("  n: 20", "  n: true")),
        "list at top": text(fx, "list.yaml", "- 1\n- 2\n"),
        "empty config": text(fx, "empty.yaml", ""),
        "no data section": text(fx, "nodata.yaml", "model: {name: x}\n"),
        "train.mode (moved)": text(
            fx, "mode.yaml", good.replace("  batch_size: 4", "  mode: lisa")
        ),
        "unknown source kind": text(fx, "kind.yaml", good.replace("kind: local", "kind: web", 1)),
        "unknown embedded name": text(
            fx,
            "embedded.yaml",
            good.replace(f"path: {fx['benign']}", "name: nope").replace(
                "kind: local", "kind: embedded", 1
            ),
        ),
        "unknown judge": text(fx, "judge.yaml", good.replace("name: keyword", "name: gpt5")),
        "duplicate key": text(fx, "dupkey.yaml", good + "output_dir: a\noutput_dir: b\n"),
        "huge alias bomb": text(
            fx,
            "bomb.yaml",
            "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n",
        ),
    }
    return [
        Case(name, "config file", ["data", "preview", path, "--no-tokens"])
        for name, path in bad.items()
    ]


def data_cases(fx: dict[str, Any]) -> list[Case]:
    good_rows = '{"instruction": "a", "response": "b"}\n'
    files = {
        "missing data file": str(fx["root"] / "gone.jsonl"),
        "empty data file": text(fx, "empty.jsonl", ""),
        "malformed JSONL line": text(fx, "bad.jsonl", good_rows + '{"instruction": "x", \n'),
        "JSONL line not an object": text(fx, "list.jsonl", good_rows + "[1, 2]\n"),
        "missing response field": text(fx, "noresp.jsonl", good_rows + '{"instruction": "x"}\n'),
        "latin-1 byte in JSONL": text(
            fx,
            "latin1.jsonl",
            good_rows.encode() + b'{"instruction": "caf\xe9", "response": "b"}\n',
        ),
        "lone surrogate in JSONL": text(
            fx, "surrogate.jsonl", good_rows + '{"instruction": "\\udc80", "response": "b"}\n'
        ),
        "latin-1 byte in CSV": text(fx, "latin1.csv", b"instruction,response\ncaf\xe9,b\n"),
        "malformed CSV": text(fx, "bad.csv", 'instruction,response\n"a,b\n'),
        "CSV without response column": text(fx, "nocol.csv", "instruction,other\na,b\n"),
        "JSON not a list": text(fx, "obj.json", '{"a": 1}'),
        "malformed JSON": text(fx, "bad.json", '[{"instruction": "a",'),
        "latin-1 byte in JSON": text(fx, "latin1.json", b'[{"instruction": "caf\xe9"}]'),
        "garbage parquet": text(fx, "bad.parquet", b"not parquet at all"),
        "unknown suffix": text(fx, "data.txt", good_rows),
        "duplicate id in file": text(
            fx,
            "dupid.jsonl",
            '{"id": "1", "instruction": "a", "response": "b"}\n' * 2,
        ),
        "unknown source label": text(
            fx, "label.jsonl", '{"instruction": "a", "response": "b", "source": "evil"}\n'
        ),
        "data path is a folder": str(fx["root"]),
    }
    cases = []
    for name, path in files.items():
        cfg = with_value(fx["config"], "data.benign.path", path)
        cfg_path = write_config(fx["root"] / "files" / f"cfg-{len(cases)}.yaml", cfg)
        cases.append(Case(name, "data file", ["data", "preview", cfg_path, "--no-tokens"]))
    # ids shared by the benign and the harmful file reach weights.csv: refused
    shared = text(
        fx, "shared-ids.jsonl", "".join(json.dumps(r) + "\n" for r in _records(30, "harmful"))
    )
    cfg = with_value(fx["config"], "data.benign.path", shared)
    cfg_path = write_config(fx["root"] / "files" / "cfg-shared.yaml", cfg)
    out = str(fx["root"] / "out" / "shared-ids")
    cases.append(
        Case(
            "ids shared across sources", "data file", ["train", "-c", cfg_path, "-o", out], out=out
        )
    )
    cfg = with_value(fx["config"], "data.n", 500)
    cases.append(
        Case(
            "n larger than the data",
            "data file",
            [
                "data",
                "preview",
                write_config(fx["root"] / "files" / "cfg-n.yaml", cfg),
                "--no-tokens",
            ],
        )
    )
    cfg = with_value(fx["config"], "data.benign.fields", {"response": "nope"})
    cases.append(
        Case(
            "fields maps a missing column",
            "data file",
            [
                "data",
                "preview",
                write_config(fx["root"] / "files" / "cfg-fields.yaml", cfg),
                "--no-tokens",
            ],
        )
    )
    return cases


def output_cases(fx: dict[str, Any]) -> list[Case]:
    r, cfg = fx["root"], fx["good_yaml"]
    a_file = text(fx, "a-file", "x")
    sched = str(r / "saved-scheduler")
    cases = []
    for cmd in ("train", "eval", "audit", "demo"):
        for what, out in (
            ("is a file", a_file),
            ("under a file", f"{a_file}/run"),
            ("not writable", "/proc/bds-run"),
        ):
            if cmd == "train":
                argv = ["train", "-c", cfg, "-o", out]
            elif cmd == "eval":
                argv = ["eval", "--config", cfg, "--output", out]
            elif cmd == "audit":
                argv = ["audit", fx["benign"], "-s", sched, "-o", out]
            else:
                argv = ["demo", "--config", cfg, "-o", out]
            cases.append(Case(f"{cmd}: output {what}", "output folder", argv))
    return cases


def run_state_cases(fx: dict[str, Any]) -> list[Case]:
    """A finished tiny run, then runs that would mix settings into it."""
    r = fx["root"]
    done = str(r / "finished")
    cases = []
    changes = {
        "resume with another lr": ("train.lr", 0.3),
        "resume with other max_steps": ("train.max_steps", 1),
        "resume with another seed": ("train.seed", 7),
        "resume with another harmful_ratio": ("data.harmful_ratio", 0.3),
        "resume with another lora.r": ("train.lora.r", 8),
        "resume with another model": ("model.name", fx["other_model"]),
    }
    for name, (dotted, value) in changes.items():
        cfg = write_config(r / "state" / f"{dotted}.yaml", with_value(fx["config"], dotted, value))
        cases.append(Case(name, "stale result", ["train", "-c", cfg, "-o", done]))
    cases.append(
        Case(
            "--mode sft on a bds folder",
            "stale result",
            ["train", "-c", fx["good_yaml"], "-o", done, "--mode", "sft"],
        )
    )
    other_data = text(
        fx, "benign-2.jsonl", "".join(json.dumps(x) + "\n" for x in _records(30, "benign2"))
    )
    cfg = write_config(
        r / "state" / "data.yaml", with_value(fx["config"], "data.benign.path", other_data)
    )
    cases.append(Case("resume with other data", "stale result", ["train", "-c", cfg, "-o", done]))
    cases.append(
        Case(
            "folder of an older bds (no run.json)",
            "stale result",
            ["train", "-c", fx["good_yaml"], "-o", str(r / "legacy")],
        )
    )
    cases.append(
        Case(
            "demo with new --p on an old folder",
            "stale result",
            ["demo", "--config", fx["good_yaml"], "-o", str(r / "demo-old"), "--p", "0.3"],
        )
    )
    cases.append(
        Case(
            "demo with new --n on an old folder",
            "stale result",
            ["demo", "--config", fx["good_yaml"], "-o", str(r / "demo-old"), "--n", "10"],
        )
    )
    cases.append(
        Case(
            "folder locked by a live process",
            "one writer",
            ["train", "-c", fx["good_yaml"], "-o", str(r / "locked")],
        )
    )
    cases.append(
        Case(
            "demo folder locked by a live process",
            "one writer",
            ["demo", "--config", fx["good_yaml"], "-o", str(r / "locked")],
        )
    )
    diverge = write_config(r / "state" / "diverge.yaml", with_value(fx["config"], "train.lr", 1e30))
    out = str(r / "out" / "diverged")
    cases.append(
        Case(
            "a diverging run (lr 1e30)",
            "NaN",
            ["train", "-c", diverge, "-o", out],
            out=out,
            timeout=120,
        )
    )
    return cases


def cli_cases(fx: dict[str, Any]) -> list[Case]:
    r, cfg = fx["root"], fx["good_yaml"]
    out = str(r / "out" / "cli")
    sched = str(r / "saved-scheduler")
    broken = r / "broken-scheduler"
    broken.mkdir(exist_ok=True)
    (broken / "scheduler.json").write_text("{not json", encoding="utf-8")
    nohead = r / "nohead-scheduler"
    nohead.mkdir(exist_ok=True)
    (nohead / "scheduler.json").write_text('{"format": "x"}', encoding="utf-8")
    keyless = r / "keyless-scheduler"
    keyless.mkdir(exist_ok=True)
    (keyless / "scheduler.json").write_text('{"format": "bds-neural-scheduler"}', encoding="utf-8")
    adapter = str(r / "finished" / "adapter")
    specs: list[tuple[str, list[str]]] = [
        ("no command", []),
        ("unknown command", ["fly"]),
        ("train without --config", ["train", "-o", out]),
        ("train without --output", ["train", "-c", cfg]),
        ("train --mode no-such", ["train", "-c", cfg, "-o", out, "--mode", "no-such"]),
        ("train --frozen alone", ["train", "-c", cfg, "-o", out, "--frozen"]),
        (
            "train --scheduler-from a plain folder",
            ["train", "-c", cfg, "-o", out, "--scheduler-from", str(r)],
        ),
        (
            "train --scheduler-from broken json",
            ["train", "-c", cfg, "-o", out, "--scheduler-from", str(broken)],
        ),
        (
            "train --scheduler-from with --mode sft",
            ["train", "-c", cfg, "-o", out, "--scheduler-from", str(broken), "--mode", "sft"],
        ),
        ("train unknown option", ["train", "-c", cfg, "-o", out, "--fast"]),
        (
            "train --push-to-hub not a repo id",
            ["train", "-c", cfg, "-o", out, "--push-to-hub", "not/a/repo id"],
        ),
        (
            "train QLoRA without bitsandbytes or CUDA",
            ["train", "-c", cfg, "-o", out, "model.load_in_4bit=true"],
        ),
        ("data preview missing config", ["data", "preview"]),
        ("eval --limit -1", ["eval", "--output", out, "--limit", "-1"]),
        ("eval --limit 0", ["eval", "--output", out, "--limit", "0"]),
        ("eval --limit abc", ["eval", "--output", out, "--limit", "abc"]),
        ("eval --batch-size 0", ["eval", "--output", out, "--batch-size", "0"]),
        ("eval --metrics nope", ["eval", "--output", out, "--metrics", "nope"]),
        ("eval --metrics empty", ["eval", "--output", out, "--metrics", ","]),
        ("eval --judge nope", ["eval", "--output", out, "--judge", "nope"]),
        ("eval --template nope", ["eval", "--output", out, "--template", "nope"]),
        ("eval --dtype int8", ["eval", "--output", out, "--dtype", "int8"]),
        (
            "eval --adapter missing",
            ["eval", "--config", cfg, "--output", out, "--adapter", str(r / "nope")],
        ),
        (
            "eval --adapter not an adapter",
            ["eval", "--config", cfg, "--output", out, "--adapter", str(r)],
        ),
        (
            "eval --adapter of another model",
            [
                "eval",
                "--config",
                cfg,
                "--model",
                fx["other_model"],
                "--output",
                out,
                "--adapter",
                adapter,
                "--limit",
                "1",
            ],
        ),
        ("eval --model missing path", ["eval", "--output", out, "--model", "./no/such/model"]),
        ("eval --model a file", ["eval", "--output", out, "--model", fx["benign"]]),
        (
            "eval --model folder without config",
            ["eval", "--output", out, "--model", str(r / "files")],
        ),
        ("eval without --output", ["eval"]),
        ("demo --p nan", ["demo", "--config", cfg, "-o", out, "--p", "nan"]),
        ("demo --p inf", ["demo", "--config", cfg, "-o", out, "--p", "inf"]),
        ("demo --p 1.5", ["demo", "--config", cfg, "-o", out, "--p", "1.5"]),
        ("demo --p -0.1", ["demo", "--config", cfg, "-o", out, "--p", "-0.1"]),
        ("demo --n 0", ["demo", "--config", cfg, "-o", out, "--n", "0"]),
        ("demo --n -5", ["demo", "--config", cfg, "-o", out, "--n", "-5"]),
        ("demo --n many", ["demo", "--config", cfg, "-o", out, "--n", "many"]),
        ("demo --seed -1", ["demo", "--config", cfg, "-o", out, "--seed", "-1"]),
        (
            "demo --methods no-such",
            ["demo", "--config", cfg, "-o", out, "--methods", "sft,no-such"],
        ),
        ("demo --methods empty", ["demo", "--config", cfg, "-o", out, "--methods", ","]),
        ("demo missing config", ["demo", "--config", str(r / "nope.yaml"), "-o", out]),
        ("audit without --scheduler", ["audit", fx["benign"]]),
        ("audit without data", ["audit", "-s", sched]),
        ("audit --limit -3", ["audit", fx["benign"], "-s", sched, "-o", out, "--limit", "-3"]),
        ("audit --show -1", ["audit", fx["benign"], "-s", sched, "-o", out, "--show", "-1"]),
        (
            "audit --threshold nan",
            ["audit", fx["benign"], "-s", sched, "-o", out, "--threshold", "nan"],
        ),
        ("audit scheduler not saved", ["audit", fx["benign"], "-s", str(r), "-o", out]),
        ("audit broken scheduler.json", ["audit", fx["benign"], "-s", str(broken), "-o", out]),
        (
            "audit scheduler.json of another format",
            ["audit", fx["benign"], "-s", str(nohead), "-o", out],
        ),
        (
            "audit scheduler.json missing keys",
            ["audit", fx["benign"], "-s", str(keyless), "-o", out],
        ),
        ("audit missing data file", ["audit", str(r / "gone.jsonl"), "-s", str(broken), "-o", out]),
        ("audit bad label", ["audit", f"evil={fx['benign']}", "-s", str(broken), "-o", out]),
        ("audit unknown embedded source", ["audit", "embedded:nope", "-s", str(broken), "-o", out]),
    ]
    return [Case(name, "command line", argv, out=None) for name, argv in specs]


def hub_cases(fx: dict[str, Any]) -> list[Case]:
    """A hub id with the network down (connection refused) or a server that never answers;
    each in a new interpreter, since the hub library reads its settings when imported."""
    cfg = write_config(
        fx["root"] / "hub.yaml", with_value(fx["config"], "model.name", "someorg/some-model")
    )
    down = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "BDS_HUB_TIMEOUT": "3"}
    silent = {**down, "HF_ENDPOINT": f"http://127.0.0.1:{fx['silent_port']}"}
    out = str(fx["root"] / "out" / "hub")
    evaluate = ["eval", "--model", "someorg/x", "--output", out, "--metrics", "harmful_score"]
    specs = [
        ("hub model, network down", ["train", "-c", cfg, "-o", out], down),
        ("hub model, silent server", ["train", "-c", cfg, "-o", out], silent),
        ("hub model in data preview", ["data", "preview", cfg], down),
        ("eval hub model, network down", evaluate, down),
        ("eval hub model, silent server", evaluate, silent),
        ("demo hub model, silent server", ["demo", "--config", cfg, "-o", out], silent),
    ]
    return [Case(name, "hub", argv, env=env, out=out, fresh=True) for name, argv, env in specs]


# ------------------------------------------------------------------ set-up runs ----------


def prepare_state(fx: dict[str, Any]) -> None:
    """The finished run, the legacy folder, the old demo folder, the locked folder and
    the saved scheduler the cases need (each made in a child process, as a user would)."""
    r = fx["root"]
    code, _, err = run_child(["train", "-c", fx["good_yaml"], "-o", str(r / "finished")], {}, 300)
    assert code == 0, err
    legacy = r / "legacy"
    legacy.mkdir(exist_ok=True)
    (legacy / "summary.json").write_text("{}")
    # an old demo folder: made with p=0.2, N=20 (its identity only: no stage needs to run)
    sched_cfg = with_value(
        fx["config"],
        "defense",
        {"name": "bds-neural", "scheduler": {"neural": {"encoder": fx["encoder"]}}},
    )
    code, _, err = run_child(
        ["train", "-c", write_config(r / "neural.yaml", sched_cfg), "-o", str(r / "neural-run")],
        {},
        300,
    )
    assert code == 0, err
    (r / "saved-scheduler").symlink_to(r / "neural-run" / "scheduler")
    pid = _child_identity_of_demo(fx)
    locked = r / "locked"
    locked.mkdir(exist_ok=True)
    (locked / ".bds.lock").write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
    )
    del pid


def _child_identity_of_demo(fx: dict[str, Any]) -> int:
    """Record the identity a demo with the good config would have, in demo-old/."""

    def work() -> None:
        from bds.config import load_config
        from bds.data.pipeline import prepare_data
        from bds.demo import DEMO_IDENTITY_FILE, STAGE_TIMES_FILE
        from bds.io import write_json
        from bds.run_identity import run_identity

        cfg = load_config(fx["good_yaml"])
        out = fx["root"] / "demo-old"
        out.mkdir(exist_ok=True)
        identity = run_identity(
            cfg, prepare_data(cfg.data), ignore=("output_dir", "train.log_steps", "train.report_to")
        )
        write_json(out / DEMO_IDENTITY_FILE, identity)
        (out / STAGE_TIMES_FILE).write_text('{"align": 1.0}')

    pid = os.fork()
    if pid == 0:
        try:
            work()
            os._exit(0)
        except BaseException:
            import traceback

            traceback.print_exc()
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return pid


def silent_server() -> int:
    """A TCP server that accepts connections and never answers (a hung proxy)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            conn, _ = sock.accept()
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return sock.getsockname()[1]


# ------------------------------------------------------------------ running --------------


def run_fresh(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str, str]:
    """(exit status or None on a hang, stdout, stderr) of `python -m bds.cli ARGV`."""
    import subprocess

    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bds.cli", *argv],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        return None, str(exc.stdout or ""), str(exc.stderr or "")
    return proc.returncode, ANSI.sub("", proc.stdout), ANSI.sub("", proc.stderr)


def run_child(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int | None, str, str]:
    """(exit status or None on a hang, stdout, stderr) of `bds ARGV` in a forked process."""
    with tempfile.TemporaryDirectory() as tmp:
        out_path, err_path = Path(tmp) / "out", Path(tmp) / "err"
        pid = os.fork()
        if pid == 0:  # the child: a fresh `bds` process in all but the imports
            try:
                os.setsid()
                fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT)
                fd_err = os.open(err_path, os.O_WRONLY | os.O_CREAT)
                os.dup2(fd_out, 1)
                os.dup2(fd_err, 2)
                os.environ.update(env)
                import torch

                torch.set_num_threads(1)
                from bds.cli import main

                main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            status = None
        code = None if status is None else os.waitstatus_to_exitcode(status)
        return (
            code,
            ANSI.sub("", out_path.read_text(errors="replace")),
            ANSI.sub("", err_path.read_text(errors="replace")),
        )


def classify(case: Case, code: int | None, out: str, err: str) -> tuple[str, str]:
    """(class, the error sentence or why it is not one)."""
    if code is None:
        return "hang", f"no end within {case.timeout:.0f} s"
    if "Traceback" in out + err:
        return "traceback", err.strip().splitlines()[-1] if err.strip() else ""
    if code == 0:
        return "exit0", out.strip().splitlines()[-1] if out.strip() else ""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    if code != 2 or len(errors) != 1:
        return "other", f"exit {code}: {err.strip()[-300:]}"
    message = errors[0]
    if SENTENCE_BREAK.search(message):
        return "other", f"several sentences: {message}"
    if case.out and any((Path(case.out) / name).exists() for name in FINISHED):
        return "other", f"left {case.out} looking finished: {message}"
    return "ok", message


def all_cases(fx: dict[str, Any]) -> list[Case]:
    return (
        numeric_cases(fx)
        + config_cases(fx)
        + data_cases(fx)
        + output_cases(fx)
        + run_state_cases(fx)
        + cli_cases(fx)
        + hub_cases(fx)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--keep", help="build the fixtures in this folder and keep them")
    args = parser.parse_args()
    os.environ.update(
        {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    )
    import torch  # noqa: F401  (imported once here, shared by every forked case)
    import transformers  # noqa: F401

    import bds.cli  # noqa: F401

    root = Path(args.keep or tempfile.mkdtemp(prefix="bds-bad-inputs-"))
    os.environ["BDS_CACHE"] = str(root / "cache")
    from bds.tiny import save_tiny_encoder

    fx = make_fixtures(root)
    fx["encoder"] = str(save_tiny_encoder(root / "tiny-encoder"))
    fx["silent_port"] = silent_server()
    prepare_state(fx)
    cases = all_cases(fx)
    if args.only:
        cases = [c for c in cases if args.only in c.name]
    rows = []
    t0 = time.perf_counter()
    for case in cases:
        if case.setup:
            case.setup(root)
        ts = time.perf_counter()
        run = run_fresh if case.fresh else run_child
        code, out, err = run(case.argv, case.env, case.timeout)
        verdict, detail = classify(case, code, out, err)
        rows.append(
            {
                "name": case.name,
                "class": case.klass,
                "argv": case.argv,
                "exit": code,
                "verdict": verdict,
                "detail": detail,
                "seconds": round(time.perf_counter() - ts, 2),
            }
        )
        mark = "  " if verdict == "ok" else "!!"
        print(f"{mark} {verdict:9s} {case.klass:14s} {case.name}: {detail[:150]}", flush=True)
    report(rows, time.perf_counter() - t0)


def report(rows: list[dict[str, Any]], seconds: float) -> None:
    from common import environment

    by_class: dict[str, Counter] = {}
    for row in rows:
        by_class.setdefault(row["class"], Counter())[row["verdict"]] += 1
    total = Counter(row["verdict"] for row in rows)
    print()
    header = f"{'class':16s} {'cases':>5s} {'ok':>5s} {'tb':>5s} {'hang':>5s} {'exit0':>5s} {'other':>5s}"
    print(header)
    for name, c in [*by_class.items(), ("total", total)]:
        n = sum(c.values())
        print(
            f"{name:16s} {n:5d} {c['ok']:5d} {c['traceback']:5d} {c['hang']:5d} {c['exit0']:5d} {c['other']:5d}"
        )
    print(f"{seconds:.0f} s")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "protocol": "each case: `bds ARGV` in its own (forked) process with a timeout; "
                "ok = exit 2, one `error:` line of one sentence, no traceback, nothing "
                "finished-looking left in the output folder",
                "totals": {
                    "cases": len(rows),
                    **{k: total[k] for k in ("ok", "traceback", "hang", "exit0", "other")},
                },
                "by_class": {k: dict(v) for k, v in by_class.items()},
                "seconds": round(seconds, 1),
                "cases": rows,
                **environment(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
