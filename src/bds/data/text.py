"""Small text utilities shared by loaders, the mixer and the disjointness checks."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_NON_WORD = re.compile(r"[^a-z0-9 ]+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case, drop punctuation, collapse spaces: the key for 'same prompt' checks."""
    return _SPACES.sub(" ", _NON_WORD.sub(" ", text.lower())).strip()


def word_set(text: str) -> frozenset[str]:
    return frozenset(normalize(text).split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class PromptMatcher:
    """Prompts to keep apart: `match(text)` says whether a text is one of them ("exact",
    normalised) or a near duplicate of one ("near", word Jaccard >= `threshold`), else None."""

    def __init__(self, prompts: Iterable[str], threshold: float):
        prompts = list(prompts)
        self.exact = {normalize(p) for p in prompts}
        self.words = [word_set(p) for p in prompts]
        self.threshold = threshold

    def match(self, text: str) -> str | None:
        if normalize(text) in self.exact:
            return "exact"
        words = word_set(text)
        if any(jaccard(words, w) >= self.threshold for w in self.words):
            return "near"
        return None


def stable_fraction(text: str, salt: str = "") -> float:
    """A deterministic number in [0, 1) from a string: seed-free, platform-free splits."""
    digest = hashlib.sha256((salt + "\x00" + text).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def shorten(text: str, width: int = 80) -> str:
    """One line, at most `width` characters, for previews (harmful text is cut short)."""
    flat = _SPACES.sub(" ", text).strip()
    return flat if len(flat) <= width else flat[: width - 1] + "…"
