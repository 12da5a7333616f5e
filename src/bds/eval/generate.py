"""Batched greedy generation: left padding, one template, seeded, with a progress bar.

Prompts rendered with one template share their first tokens (the template's header, and
for a task set its instruction: 54 of the 90 tokens of a sentiment-test prompt). That
prefix is run through the model once and its key/value cache copied into every batch, so
a batch computes only what follows it: the prompt's own tokens, padded between the shared
prefix and them (the attention mask hides the padding; positions come from the mask, so
every token keeps the position it has in the unpadded prompt). On a 2-core CPU prompt
processing is most of a short-answer evaluation's time.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bds.data.schema import Record
from bds.data.templates import TemplateName, render_prompt
from bds.errors import BDSInputError


@dataclass
class Generation:
    """One model answer. `hit_limit`: generation stopped at max_new_tokens, not at EOS."""

    id: str
    prompt: str  # the rendered prompt the model saw
    output: str
    new_tokens: int
    hit_limit: bool


def load_generator(model_cfg: Any, adapter: str | None = None, device: str | None = None):
    """(model, tokenizer) for generation: the base model, with a PEFT LoRA adapter (a folder
    or a hub id) if given."""
    from bds.models import load_model, load_tokenizer, resolve_adapter

    if adapter is not None:
        adapter = resolve_adapter(adapter)  # before the model loads
    tokenizer = load_tokenizer(model_cfg, padding_side="left")
    model = load_model(model_cfg)
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter)
        except (RuntimeError, ValueError, KeyError) as exc:  # shapes or modules of another model
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BDSInputError(
                f"eval.adapter: {adapter} does not fit {model_cfg.name} ({first[:200]}); give "
                "an adapter trained on this base model"
            ) from None
    model.eval()
    if device is not None:
        model.to(device)
    return model, tokenizer


def generate(
    model: Any,
    tokenizer: Any,
    records: list[Record],
    template: TemplateName,
    max_new_tokens: int,
    batch_size: int = 8,
    seed: int = 42,
    desc: str = "generating",
    journal: Path | None = None,
    fingerprint: str = "",
    share_prefix: bool = True,
) -> list[Generation]:
    """Greedy answers to `records` (in order), rendered with `template`.

    Prompts are batched longest first (less padding) with left padding, so every row's
    answer starts at the same position; the order of the result is the order of `records`.
    `journal`: a JSONL file each finished batch is appended to; a later call with the same
    `fingerprint` (what the answers depend on) skips the batches it holds, so an interrupted
    evaluation resumes, with the same batches, hence the same answers.
    `share_prefix`: compute the prompts' common first tokens once (module docstring).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    if tokenizer.padding_side != "left":
        raise ValueError("generation needs a left-padding tokenizer (load_tokenizer(..., 'left'))")
    torch.manual_seed(seed)  # greedy decoding is deterministic; this covers any sampling hook
    prompts, token_ids, shared, key = _prepared(
        tokenizer, records, template, max_new_tokens, batch_size, fingerprint, share_prefix
    )
    order = sorted(range(len(prompts)), key=lambda i: -len(token_ids[i]))
    eos = _eos_ids(model, tokenizer)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sorted(eos),
    )
    device = next(model.parameters()).device
    out: list[Generation | None] = [None] * len(prompts)
    if journal is not None:
        _read_journal(journal, key, out)
    done = sum(g is not None for g in out)
    with (
        torch.inference_mode(),
        tqdm(total=len(prompts), initial=done, desc=desc, unit="prompt", dynamic_ncols=True) as bar,
    ):
        prefix_cache = None  # computed at the first batch to generate (none if journaled)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if all(out[i] is not None for i in idx):
                continue
            if shared and prefix_cache is None:
                prefix_cache = _prefix_cache(model, token_ids[0][:shared], device)
                shared = shared if prefix_cache is not None else 0
            if prefix_cache is None:
                batch = tokenizer(
                    [prompts[i] for i in idx],
                    add_special_tokens=True,
                    padding=True,
                    return_tensors="pt",
                ).to(device)
                seqs = model.generate(**batch, generation_config=config)
            else:
                batch = _after_prefix([token_ids[i] for i in idx], shared, tokenizer.pad_token_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(idx))
                with warnings.catch_warnings():  # renamed `cache` in later 5.x; both work <6
                    warnings.filterwarnings("ignore", "`past_key_values` is deprecated")
                    seqs = model.generate(**batch, past_key_values=cache, generation_config=config)
            new = seqs[:, batch["input_ids"].shape[1] :]
            for row, i in enumerate(idx):
                ids = new[row].tolist()
                # Generated length: up to and including the first EOS (the rest is padding).
                n = next((k + 1 for k, t in enumerate(ids) if t in eos), None)
                hit_limit = n is None
                n = len(ids) if n is None else n
                text = tokenizer.decode(ids[:n], skip_special_tokens=True).strip()
                out[i] = Generation(records[i].id, prompts[i], text, n, hit_limit)
            if journal is not None:
                _append_journal(journal, key, {i: out[i] for i in idx})
            bar.update(len(idx))
    return [g for g in out if g is not None]


MIN_SHARED_PREFIX = 8  # tokens; a shorter common prefix is not worth its own forward pass


def shared_prefix_length(token_ids: list[list[int]]) -> int:
    """How many first tokens every prompt shares, leaving each at least one of its own
    (generation starts from a prompt's last token, which must be computed in the batch)."""
    if len(token_ids) < 2:
        return 0
    limit = min(len(t) for t in token_ids) - 1
    first = token_ids[0]
    for k in range(limit):
        if any(t[k] != first[k] for t in token_ids):
            return k
    return max(limit, 0)


def _prefix_cache(model: Any, prefix: list[int], device: Any) -> Any:
    """The key/value cache of the shared prefix (batch 1); None where the model's cache
    cannot be repeated across a batch (then every batch runs its whole prompts)."""
    import torch

    ids = torch.tensor([prefix], device=device)
    cache = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=True)
    cache = getattr(cache, "past_key_values", None)
    return cache if hasattr(cache, "batch_repeat_interleave") else None


def _after_prefix(token_ids: list[list[int]], shared: int, pad_id: int) -> dict[str, Any]:
    """Whole prompts laid out as [shared prefix | padding | own tokens], with the mask that
    hides the padding: the model sees each prompt as it is, its own tokens end aligned."""
    import torch

    width = max(len(t) for t in token_ids)
    ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, t in enumerate(token_ids):
        own = len(t) - shared
        ids[row, :shared] = torch.tensor(t[:shared])
        ids[row, width - own :] = torch.tensor(t[shared:])
        mask[row, :shared] = 1
        mask[row, width - own :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def journal_key(
    tokenizer: Any,
    records: list[Record],
    template: TemplateName,
    max_new_tokens: int,
    batch_size: int = 8,
    fingerprint: str = "",
    share_prefix: bool = True,
) -> str:
    """The key `generate` with these arguments writes into its journal (a journal written
    under another key is discarded): to check journaled answers without a model."""
    args = (max_new_tokens, batch_size, fingerprint, share_prefix)
    return _prepared(tokenizer, records, template, *args)[3]


def _prepared(
    tokenizer: Any,
    records: list[Record],
    template: TemplateName,
    max_new_tokens: int,
    batch_size: int,
    fingerprint: str,
    share_prefix: bool,
) -> tuple[list[str], list[list[int]], int, str]:
    """The prompts as the model sees them, their token ids, the length of their shared
    prefix (0: none worth computing once) and the journal key."""
    prompts = [render_prompt(r, template, tokenizer) for r in records]
    # Tokenise like training does (tokenize.encode): the template text, special tokens added.
    token_ids = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    shared = shared_prefix_length(token_ids) if share_prefix else 0
    if shared < MIN_SHARED_PREFIX:
        shared = 0
    key = _journal_key(fingerprint, prompts, max_new_tokens, batch_size, shared)
    return prompts, token_ids, shared, key


def _journal_key(
    fingerprint: str, prompts: list[str], max_new_tokens: int, batch_size: int, shared: int
) -> str:
    import hashlib

    text = json.dumps([fingerprint, prompts, max_new_tokens, batch_size, shared])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_journal(path: Path, key: str, out: list[Generation | None]) -> None:
    """Fill `out` from a journal written for the same key; any other journal is discarded."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        header = json.loads(lines[0]) if lines else {}
    except json.JSONDecodeError:
        header = {}
    if header.get("key") != key:
        path.unlink()
        return
    good = lines[:1]
    for line in lines[1:]:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by the interruption: redo its batch
            # keep only the whole lines, so later appends start on a fresh line
            path.write_text("".join(x + "\n" for x in good), encoding="utf-8")
            break
        good.append(line)
        i = row.pop("i")
        out[i] = Generation(**row)


def _append_journal(path: Path, key: str, batch: dict[int, Generation | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file()
    with path.open("a", encoding="utf-8") as fh:
        if new:
            fh.write(json.dumps({"key": key}) + "\n")
        for i, g in batch.items():
            fh.write(json.dumps({"i": i, **dataclasses.asdict(g)}, ensure_ascii=False) + "\n")


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """End-of-answer ids: the tokenizer's EOS plus any the model's generation config adds
    (chat models often end a turn with their own token)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(extra, int):
        ids.add(extra)
    elif extra:
        ids.update(int(x) for x in extra)
    if not ids:
        raise BDSInputError(
            "the tokenizer has no EOS token; generation could not tell where answers end"
        )
    return ids
