"""The model card (README.md) a trained adapter folder carries, so it can be shared as is.

YAML front matter as the hub reads it (base_model, library_name: peft, tags), then what
a reader needs to judge the adapter: the base model, the defense and its settings, the
training run, the per-sample weights (mean weight per source, AUROC when the data had
benign / harmful labels) and, when the run was evaluated, its scores.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from bds.assets import EMBEDDED_MODELS, EMBEDDED_PREFIX
from bds.hub import looks_like_local_path

CARD_FILE = "README.md"
PAPER = "https://arxiv.org/abs/2510.27172"


def hub_base_model(name: str) -> str | None:
    """The hub id the card's `base_model` names: an embedded model's origin, a hub id
    itself; None for a local folder (the hub knows nothing of it)."""
    if name.startswith(EMBEDDED_PREFIX):
        model = EMBEDDED_MODELS.get(name[len(EMBEDDED_PREFIX) :])
        return model.origin.split(",")[0].strip() if model else None
    hub_id = "/" in name and not looks_like_local_path(name)  # org/name
    return name if hub_id and not Path(name).exists() else None


def model_card(summary: dict[str, Any], evaluation: dict[str, Any] | None = None) -> str:
    """The card's text from a run's summary (summary.json's content) and eval results."""
    from bds.io import to_jsonable

    summary = to_jsonable(summary)
    cfg = summary.get("config", {})
    base = cfg.get("model", {}).get("name", "unknown")
    defense = cfg.get("defense", {})
    name = defense.get("name", summary.get("mode", "unknown"))
    meta: dict[str, Any] = {}
    hub_base = hub_base_model(base)
    if hub_base:
        meta["base_model"] = hub_base
    meta["library_name"] = "peft"
    meta["tags"] = ["bds", "lora", "harmful-fine-tuning-defense", f"defense:{name}"]
    sections = [
        f"# LoRA adapter fine-tuned with bds (defense: {name})",
        _base_section(base, hub_base),
        _defense_section(name, defense),
        _training_section(summary, cfg),
        _weights_section(summary.get("weights")),
        _evaluation_section(evaluation),
        _usage_section(base),
        _made_with(summary),
    ]
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n\n".join(s for s in sections if s) + "\n"


def write_model_card(
    adapter_dir: Path, summary: dict[str, Any], evaluation: dict[str, Any] | None = None
) -> Path:
    path = Path(adapter_dir) / CARD_FILE
    path.write_text(model_card(summary, evaluation), encoding="utf-8")
    return path


def _base_section(base: str, hub_base: str | None) -> str:
    text = f"## Base model\n\n`{base}`"
    if base.startswith(EMBEDDED_PREFIX) and hub_base:
        text += (
            f": bds's embedded copy of [{hub_base}](https://huggingface.co/{hub_base}) "
            "(de-quantised from a Q4_1 GGUF, so close to but not the same weights as the hub's)"
        )
    return text + " (`adapter_config.json` records this name)."


def _defense_section(name: str, defense: dict[str, Any]) -> str:
    settings = {k: v for k, v in defense.items() if k != "name"}
    body = yaml.safe_dump(settings, sort_keys=False).strip() if settings else "(no settings)"
    return f"## Defense: `{name}`\n\nSettings (the run config's `defense:` section):\n\n```yaml\n{body}\n```"


def _training_section(summary: dict[str, Any], cfg: dict[str, Any]) -> str:
    train = cfg.get("train", {})
    lora = train.get("lora", {})
    counts = summary.get("counts", {})
    rows = [
        ("steps", summary.get("steps")),
        ("epochs", train.get("epochs")),
        ("learning rate", train.get("lr")),
        (
            "batch size (user / alignment)",
            f"{train.get('batch_size')} / {train.get('alignment_batch_size')}",
        ),
        (
            "LoRA",
            f"r={lora.get('r')}, alpha={lora.get('alpha')}, modules {', '.join(lora.get('target_modules', []))}",
        ),
        (
            "user samples (benign / harmful labelled)",
            f"{counts.get('finetune')} ({counts.get('finetune_benign')} / {counts.get('finetune_harmful')})",
        ),
        ("alignment samples", counts.get("alignment")),
        ("max length (tokens)", cfg.get("data", {}).get("max_length")),
        ("precision", (summary.get("mixed_precision") or {}).get("used")),
        ("seed", train.get("seed")),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows if v is not None)
    return f"## Training\n\n| setting | value |\n| --- | --- |\n{table}"


def _weights_section(weights: dict[str, Any] | None) -> str:
    if not weights:
        return ""
    counts = weights.get("count", {})
    rows = "\n".join(
        f"| {source} | {counts.get(source, '')} | {mean:.3f} |"
        for source, mean in weights.get("mean_weight", {}).items()
    )
    text = (
        "## Per-sample weights\n\nThe scheduler's final weight of each user sample "
        "(N·softmax: 1 is the average; `weights.csv` in the run folder has every sample's).\n\n"
        f"| source | samples | mean weight |\n| --- | --- | --- |\n{rows}"
    )
    auroc = weights.get("auroc_benign_vs_harmful")
    if auroc is not None:
        text += f"\n\nAUROC of the weights, benign above harmful: {auroc:.3f}."
    return text


def _evaluation_section(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return ""
    headline = evaluation.get("headline", {})
    counts = evaluation.get("counts", {})
    rows = []
    for metric, value in headline.items():
        score = value.get("value")
        judge = value.get("judge") or "-"
        n = counts.get(metric, {}).get("prompts", "")
        rows.append(f"| {metric} | {judge} | {'-' if score is None else f'{score:.1f}'} | {n} |")
    protocol = evaluation.get("protocol", {})
    note = (
        f"Greedy decoding, template {protocol.get('template')}; the prompts, judges and every "
        "generation are in the evaluation's results.json."
    )
    table = "\n".join(rows)
    return (
        "## Evaluation\n\n| metric | judge | score (%) | prompts |\n| --- | --- | --- | --- |\n"
        f"{table}\n\nharmful_score: % of harmful prompts answered harmfully (lower is better); "
        "finetune_accuracy: % correct on the task (higher is better); over_refusal: % of "
        f"benign requests refused (lower is better). {note}"
    )


def _usage_section(base: str) -> str:
    if base.startswith(EMBEDDED_PREFIX):
        imports = "from bds.config import ModelConfig\nfrom bds.models import load_model"
        load = f'base = load_model(ModelConfig(name="{base}"))'
    else:
        imports = "from transformers import AutoModelForCausalLM"
        load = f'base = AutoModelForCausalLM.from_pretrained("{base}")'
    code = (
        f"{imports}\nfrom peft import PeftModel\n\n{load}\n"
        'model = PeftModel.from_pretrained(base, "THIS_FOLDER_OR_REPO")'
    )
    return f"## Use\n\n```python\n{code}\n```"


def _made_with(summary: dict[str, Any]) -> str:
    version = (summary.get("versions") or {}).get("bayesian-data-scheduler") or "unknown"
    return (
        f"Made with `bds` {version} (package bayesian-data-scheduler), the reference "
        f"implementation of the Bayesian Data Scheduler (NeurIPS 2025, [arXiv:2510.27172]({PAPER}))."
    )


def read_summary(run_dir: Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / "summary.json").read_text(encoding="utf-8"))
