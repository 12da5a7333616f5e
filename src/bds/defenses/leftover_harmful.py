"""A harmful pool for a fine-tuning-time or post-fine-tuning defense: harmful (prompt,
answer) samples disjoint from the attack's samples and from the evaluation prompts (issue
15, fairness), taken from what the run's harmful source leaves over.

From a source the defense names, or else the run's own `data.harmful` source: every record
of it, minus
  - the records in D_ft, and any record whose prompt (normalised text) is a D_ft prompt
    (the same prompt with another answer would still teach the defense the attack's data);
  - any record whose prompt equals or nearly equals (word Jaccard >= 0.6, the rule the
    embedded AdvBench split uses) a prompt of eval.harmful_score.prompts.
Every removal is counted in the pool's notes; an empty pool is an error.

Embedded default: data.harmful is pyrit-harmful (280 human-scored compliant answers to
187 prompts, the attack's share: the refusal judge's requests are never the attack's); D_ft draws round(p N) of them, the pool is the rest minus their prompts, and
AdvBench (the evaluation prompts) already leaves out every PyRIT prompt and its near
duplicates, so the last rule removes none there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bds.data.schema import Record
from bds.data.text import PromptMatcher, normalize
from bds.errors import BDSInputError


@dataclass
class HarmfulPool:
    records: list[Record]
    source: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "size": len(self.records), "notes": self.notes}


def leftover_harmful_pool(run: Any, source_cfg: Any, defense: str) -> HarmfulPool:
    """The pool for `defense` (its name, for messages) in training run `run` (its config,
    the data as given and D_ft after the defense's own data changes)."""
    from bds.data.sources import load_source

    if source_cfg is not None:
        loaded = load_source(source_cfg)
        where = f"defense.harmful ({loaded.name})"
    elif "harmful" in run.given_data.sources:
        loaded = run.given_data.sources["harmful"]
        where = f"data.harmful ({loaded.name})"
    else:
        raise BDSInputError(
            f"defense {defense} needs harmful samples: set defense.harmful to a source of "
            "harmful prompts with harmful answers (disjoint from the attack's)"
        )
    finetune = run.given_data.finetune
    ids = {r.id for r in finetune}
    prompts = {normalize(r.instruction) for r in finetune}
    records = [r for r in loaded.records if r.id not in ids]
    in_ft = len(loaded.records) - len(records)
    same_prompt = [r for r in records if normalize(r.instruction) in prompts]
    records = [r for r in records if normalize(r.instruction) not in prompts]
    notes = [
        f"{in_ft} records in D_ft and {len(same_prompt)} more with a D_ft prompt left out "
        f"of {len(loaded.records)}"
    ]
    records, near_eval = _without_eval_prompts(records, run.cfg.eval.harmful_score.prompts)
    notes.append(f"{near_eval} records with an evaluation prompt (or a near duplicate) left out")
    if not records:
        raise BDSInputError(
            f"defense {defense}: no harmful sample of {where} is left once the attack's "
            "samples and the evaluation prompts are taken out; give defense.harmful a "
            "larger or separate source"
        )
    return HarmfulPool(records, loaded.name, notes)


def _without_eval_prompts(records: list[Record], prompts_cfg: Any) -> tuple[list[Record], int]:
    from bds.data.embedded import EVAL_NEAR_DUPLICATE_JACCARD
    from bds.data.sources import load_source

    evaluated = load_source(prompts_cfg, prompts_only=True).records
    matcher = PromptMatcher((r.instruction for r in evaluated), EVAL_NEAR_DUPLICATE_JACCARD)
    kept = [r for r in records if not matcher.match(r.instruction)]
    return kept, len(records) - len(kept)
