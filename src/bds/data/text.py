"""Small text utilities shared by loaders, the mixer and the disjointness checks."""

from __future__ import annotations

import hashlib
import math
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
    normalised) or a near duplicate of one ("near", word Jaccard >= `threshold`), else None.

    Near duplicates are found through a prefix-filter index (Bayardo et al., "Scaling up
    all pairs similarity search", 2007): with the words of every set in one fixed order, two
    sets of Jaccard >= t share a word among the first |x| - ceil(t |x|) + 1 of each, so only
    prompts sharing such a word are compared; the answer is the same as comparing all."""

    def __init__(self, prompts: Iterable[str], threshold: float):
        prompts = list(prompts)
        self.exact = {normalize(p) for p in prompts}
        self.words = [word_set(p) for p in prompts]
        self.threshold = threshold
        frequency: dict[str, int] = {}
        for words in self.words:
            for word in words:
                frequency[word] = frequency.get(word, 0) + 1
        self._frequency = frequency
        self._index: dict[str, list[int]] = {}
        for i, words in enumerate(self.words):
            for word in self._prefix(words):
                self._index.setdefault(word, []).append(i)

    def _prefix(self, words: frozenset[str]) -> list[str]:
        """The first words of the set in the shared order (rarest first: fewest candidates)."""
        ordered = sorted(words, key=lambda w: (self._frequency.get(w, 0), w))
        keep = len(ordered) - math.ceil(self.threshold * len(ordered) - 1e-9) + 1
        return ordered[:keep]

    def match(self, text: str) -> str | None:
        if normalize(text) in self.exact:
            return "exact"
        words = word_set(text)
        if not words:  # Jaccard with any non-empty prompt is 0 (an empty one matched above)
            return None
        candidates = {i for word in self._prefix(words) for i in self._index.get(word, ())}
        if any(jaccard(words, self.words[i]) >= self.threshold for i in candidates):
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
