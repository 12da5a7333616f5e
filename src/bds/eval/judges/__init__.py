"""Judge registry: a name in the config picks a judge class, imported only when used.

- refusal-classifier (embedded default): MiniLM embeddings + a classifier trained on PyRIT's
  human refusal / compliance labels.
- keyword: the refusal-phrase list of AdvBench-style attack-success metrics.
- beaver-dam: PKU-Alignment/beaver-dam-7b QA moderation, as the reference protocol uses it.
- llama-guard: any Llama Guard checkpoint through its chat template.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bds.eval.judges.base import Judge, Verdict

if TYPE_CHECKING:
    from bds.eval.config import JudgeConfig

__all__ = ["JUDGES", "REFUSAL_JUDGES", "Judge", "Verdict", "build_judge", "judge_names"]

# name -> "module:Class"; modules load lazily (two of them pull in 7B-model code paths).
JUDGES: dict[str, str] = {
    "refusal-classifier": "bds.eval.judges.refusal_classifier:RefusalClassifierJudge",
    "keyword": "bds.eval.judges.keyword:KeywordJudge",
    "beaver-dam": "bds.eval.judges.beaver_dam:BeaverDamJudge",
    "llama-guard": "bds.eval.judges.llama_guard:LlamaGuardJudge",
}
# Judges that decide comply-vs-refuse: the ones over-refusal can use.
REFUSAL_JUDGES = ("refusal-classifier", "keyword")


def judge_names() -> list[str]:
    return list(JUDGES)


def judge_class(name: str) -> type[Judge]:
    module, cls = JUDGES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_judge(cfg: JudgeConfig, device: str | None = None) -> Judge:
    """Instantiate the judge `cfg.name` with its settings (models load here, once)."""
    return judge_class(cfg.name).from_config(cfg, device=device)
