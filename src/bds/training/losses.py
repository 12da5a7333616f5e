"""The per-sample loss: the one place the training objective's CE is computed."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from bds.data.tokenize import IGNORE_INDEX


def positions_to_keep(labels: torch.Tensor) -> int:
    """How many trailing positions' logits the loss needs (for the model's logits_to_keep).

    Logits at position t predict token t+1, so the first needed position is one before the
    earliest response token in the batch. Prompts are often most of a sample (an SST-2
    sample is ~90 prompt tokens and 2 answer tokens): skipping their vocabulary projection
    and softmax saves a large part of the step on a 49k-token vocabulary.
    """
    has_label = (labels != IGNORE_INDEX).any(dim=0)
    first = int(has_label.float().argmax()) if bool(has_label.any()) else labels.size(1) - 1
    return labels.size(1) - max(first - 1, 0)


def per_sample_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token CE over each sample's response tokens: shape [batch].

    `logits` may cover only the last K positions (see positions_to_keep). Prompt and
    padding positions carry IGNORE_INDEX and do not count. A sample with no response token
    (cannot happen after tokenisation, which drops those) would get 0.
    """
    labels = labels[:, labels.size(1) - logits.size(1) :]
    shift_logits = logits[:, :-1, :]
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)).float(),
        shift_labels.reshape(-1),
        reduction="none",
        ignore_index=IGNORE_INDEX,
    ).view(shift_labels.shape)
    mask = (shift_labels != IGNORE_INDEX).to(ce.dtype)
    return (ce * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


def response_losses(hidden: torch.Tensor, labels: torch.Tensor, lm_head: Any) -> torch.Tensor:
    """per_sample_loss, projecting to the vocabulary only the positions that predict a
    response token: shape [batch].

    `hidden` is the model's final hidden state [batch, seq, dim] (after the last norm).
    Responses are a small part of most samples (an SST-2 sample is ~90 prompt tokens and 2
    answer tokens), and on a 49k-token vocabulary the projection and its softmax are a large
    part of a small model's step: this skips them for every prompt and padding position.
    Exact only where logits = lm_head(hidden); the trainer checks that once per model.
    """
    targets = labels[:, 1:]
    picked = targets != IGNORE_INDEX
    logits = lm_head(hidden[:, :-1][picked])
    ce = F.cross_entropy(logits.float(), targets[picked], reduction="none")
    rows = picked.nonzero()[:, 0]
    total = torch.zeros(labels.size(0), dtype=ce.dtype, device=ce.device).index_add(0, rows, ce)
    return total / picked.sum(dim=1).clamp_min(1).to(ce.dtype)


def weighted_objective(
    user_losses: torch.Tensor | None,
    weights: torch.Tensor | None,
    align_losses: torch.Tensor | None,
    alignment_weight: float = 1.0,
) -> torch.Tensor:
    """Model loss = lambda * mean CE over the alignment batch + mean_i(w_i * l_i) over the
    user batch.

    Missing parts drop out: no alignment batch (sft, bds-no-align), no weights (sft, mix).
    """
    total = torch.zeros(
        (), device=(user_losses if user_losses is not None else align_losses).device
    )
    if user_losses is not None:
        total = total + (user_losses * weights if weights is not None else user_losses).mean()
    if align_losses is not None:
        term = align_losses.mean()
        total = total + (term * alignment_weight if alignment_weight != 1.0 else term)
    return total
