"""The neural scheduler's text encoder: its own tokenizer, mean pooling, unit-norm vectors.

It never sees the LLM's token ids (the reference code feeds those into a model with another
vocabulary): each sample's text is tokenized by the encoder's own tokenizer. `calls` counts
the texts encoded, so tests can check that a training step costs O(batch) encoder passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bds.data.schema import Record


def sample_text(record: Record) -> str:
    """What the scheduler reads of a sample: instruction, input and response, one per line."""
    return "\n".join(part for part in (record.instruction, record.input, record.response) if part)


class TextEncoder(torch.nn.Module):
    """A Hugging Face encoder (AutoModel) + its tokenizer -> [len(texts), dim] embeddings."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dim = int(model.config.hidden_size)
        self.calls = 0

    @classmethod
    def load(cls, name_or_path: str, max_length: int) -> TextEncoder:
        from transformers import AutoModel, AutoTokenizer

        from bds.assets import resolve_encoder_path
        from bds.errors import BDSInputError

        path = resolve_encoder_path(name_or_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path, dtype=torch.float32)
        except OSError as exc:
            raise BDSInputError(
                f"scheduler encoder {name_or_path!r} could not be loaded ({str(exc).splitlines()[0]}); "
                "give a local folder, a hub name, or embedded:all-minilm-l6-v2"
            ) from None
        return cls(model, tokenizer, max_length)

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls += len(texts)
        device = next(self.model.parameters()).device
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="pt",
        ).to(device)
        hidden = self.model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)
