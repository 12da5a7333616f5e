"""The evidence drive: how strongly the alignment stage taught the model to refuse each
user sample's prompt.

The posterior BDS infers asks how much fitting sample i conflicts with D_safe. D_safe
speaks about user prompts through the alignment stage that fitted it: that stage turned the
base model p_base into the aligned model p_aligned, and the log-likelihood ratio

    e_i = log R_aligned(x_i) - log R_base(x_i),    R(x) = sum_o p(o | x),

o over the commonest openings of D_safe's answers (their first OPENING_WORDS words), is the evidence the alignment
data added for refusing x_i. A user sample that answers a prompt D_safe taught the model to
refuse works against D_safe in proportion to e_i, so the scheduler weighs it down as the
loss drive weighs down a large loss (the MAP fixed point z_i - mean z ~ -std^2 w_i
(e_i - mean e)).

Why not the gradient forms (training/conflict.py, the twin reference): at the aligned
SmolLM2-135M a step on the alignment set lowers a fluent harmful answer's loss more than a
tweet's, and the finite difference of a twin adapter is mostly noise
(docs/scheduler_drive.md). The refusal propensity is what the alignment changed on purpose,
and the base model removes what every prompt shares (the template, the prompt's length and
format): on the aligned demo model, before any step, e_i alone gives AUROC 1.00 on
free-form tweets and 0.96 on sentiment labels, where the raw propensity gives 0.52 / 0.65
(benchmarks/drive_signals.py, group refusal).

e_i is computed once, before the first step, at the model fine-tuning starts from (the
aligned model, its LoRA still zero): it is the alignment's verdict, not the attack's
progress. It reads no alignment batch, so bds-no-align may use it.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from bds.data.schema import Record
from bds.data.templates import render_prompt
from bds.errors import BDSInputError

# The embedded D_safe's five commonest 3-word openings ("I am sorry", "I can't help", "I'm
# sorry, but", ...) open 88 of its 140 refusals.
OPENING_WORDS = 3


def base_model_of(aligned: str) -> str | None:
    """The model an aligned checkpoint (a bds alignment stage's output) was aligned from."""
    from bds.align import ALIGNMENT_INFO_FILE

    path = Path(aligned) / ALIGNMENT_INFO_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("base")


def resolve_base(settings_base: str | None, model_name: str) -> str:
    from bds.align import ALIGNMENT_INFO_FILE

    base = settings_base or base_model_of(model_name)
    if base is None:
        raise BDSInputError(
            f"defense.drive: evidence compares the model with the one it was aligned from, "
            f"and {model_name} does not say which (no {ALIGNMENT_INFO_FILE}): set "
            "defense.evidence_base to the pre-alignment model"
        )
    return base


def refusal_openings(alignment: list[Record], given: list[str] | None, count: int) -> list[str]:
    """The openings scored: `given`, or the `count` commonest first-OPENING_WORDS-word
    openings of the alignment set's answers (its retain samples left out)."""
    if given:
        return list(given)
    counts = Counter(
        " ".join(r.response.split()[:OPENING_WORDS])
        for r in alignment
        if not r.meta.get("retain") and r.response.strip()
    )
    if not counts:
        raise BDSInputError(
            "defense.drive: evidence scores the openings of the alignment set's answers, and "
            "this run has no alignment set: give data.alignment, or the openings themselves "
            "as defense.evidence_openings"
        )
    return [text for text, _ in counts.most_common(count)]


def prompt_and_opening_ids(
    records: list[Record], openings: list[str], tokenizer: Any, template: str, max_length: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Each record's prompt ids, and each opening's ids.

    A prompt is cut from its start where prompt + the longest opening would pass max_length
    (the opening, the part scored, is kept whole)."""
    opening_ids = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in openings]
    room = max(1, max_length - max(len(o) for o in opening_ids))
    prompts = []
    for record in records:
        ids = tokenizer(render_prompt(record, template, tokenizer), add_special_tokens=False)
        ids = ids["input_ids"]
        if not ids and tokenizer.bos_token_id is not None:  # a text record: no prompt
            ids = [tokenizer.bos_token_id]
        prompts.append(ids[-room:])
    return prompts, opening_ids


@torch.no_grad()
def refusal_log_mass(
    model: Any,
    prompts: list[list[int]],
    openings: list[list[int]],
    pad_id: int,
    batch_size: int = 16,
    autocast: Any = None,
) -> torch.Tensor:
    """log sum_o p(o | x) per prompt x, over the openings o.

    Each prompt runs once; its cached keys and values are repeated for the openings, which
    run as one short batch (the openings are a few tokens, the prompts ~100). `autocast`:
    a function returning the run's autocast context (accelerate's), or None."""
    device = next(model.parameters()).device
    k, longest = len(openings), max(len(o) for o in openings)
    # the openings' inputs: every token but the last (the prompt's last position predicts
    # the first), right-padded
    tail = torch.full((k, max(longest - 1, 1)), pad_id, dtype=torch.long)
    tail_mask = torch.zeros_like(tail)
    for j, o in enumerate(openings):
        tail[j, : len(o) - 1] = torch.tensor(o[:-1], dtype=torch.long)
        tail_mask[j, : len(o) - 1] = 1
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        r, width = len(chunk), max(len(x) for x in chunk)
        ids = torch.full((r, width), pad_id, dtype=torch.long)
        mask = torch.zeros((r, width), dtype=torch.long)
        for row, x in enumerate(chunk):  # left padding: every prompt ends at the last column
            ids[row, width - len(x) :] = torch.tensor(x, dtype=torch.long)
            mask[row, width - len(x) :] = 1
        with autocast() if autocast else contextlib.nullcontext():
            first = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device),
                use_cache=longest > 1,
            )
        last = first.logits[:, -1].float()  # (r, V)
        firsts = torch.tensor([o[0] for o in openings], device=last.device)
        # log p(first token): its logit minus the log-normaliser; no full-vocabulary softmax
        total = last[:, firsts] - torch.logsumexp(last, dim=-1, keepdim=True)  # (r, k)
        if longest > 1:
            # `cache` since transformers 5.x (the old name warns); `past_key_values` before
            cache = first["cache"] if "cache" in first else first.past_key_values  # noqa: SIM401
            cache.batch_repeat_interleave(k)
            n_real = mask.sum(-1).repeat_interleave(k)  # (r*k,)
            steps = torch.arange(tail.shape[1])
            with (
                autocast() if autocast else contextlib.nullcontext(),
                warnings.catch_warnings(),  # renamed `cache` in later 5.x; both work <6
            ):
                warnings.filterwarnings("ignore", "`past_key_values` is deprecated")
                rest = model(
                    input_ids=tail.repeat(r, 1).to(device),
                    attention_mask=torch.cat(
                        [mask.repeat_interleave(k, 0), tail_mask.repeat(r, 1)], dim=1
                    ).to(device),
                    position_ids=(n_real[:, None] + steps[None, :]).to(device),
                    past_key_values=cache,
                )
            logits = rest.logits.float().view(r, k, tail.shape[1], -1)  # (r, k, T, V)
            # the token each opening position predicts (its next token), pad where it has none
            targets = torch.zeros((k, tail.shape[1]), dtype=torch.long)
            for j, o in enumerate(openings):
                targets[j, : len(o) - 1] = torch.tensor(o[1:], dtype=torch.long)
            targets = targets.to(logits.device)
            picked = logits.gather(-1, targets[None, :, :, None].expand(r, -1, -1, 1))[..., 0]
            logp = picked - torch.logsumexp(logits, dim=-1)  # (r, k, T)
            total = total + (logp * tail_mask.to(logp.device)[None]).sum(-1)
        out.append(torch.logsumexp(total, dim=1).cpu())
    return torch.cat(out)


def alignment_evidence(
    aligned: Any,
    base: Any,
    records: list[Record],
    openings: list[str],
    tokenizer: Any,
    template: str,
    max_length: int,
    batch_size: int = 16,
    autocast: Any = None,
) -> torch.Tensor:
    """e_i = log R_aligned(x_i) - log R_base(x_i) for every record (see the module doc)."""
    prompts, opening_ids = prompt_and_opening_ids(
        records, openings, tokenizer, template, max_length
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    args = (prompts, opening_ids, pad, batch_size, autocast)
    return refusal_log_mass(aligned, *args) - refusal_log_mass(base, *args)
