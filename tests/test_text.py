"""PromptMatcher's indexed search gives the same answers as comparing every pair."""

import random

import pytest

from bds.data.text import PromptMatcher, jaccard, normalize, word_set


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.6, 0.8, 1.0])
def test_prompt_matcher_equals_the_all_pairs_comparison(threshold):
    rng = random.Random(threshold)
    vocab = [f"w{i}" for i in range(40)]
    prompts = [" ".join(rng.choices(vocab, k=rng.randint(1, 8))) for _ in range(300)]
    queries = [" ".join(rng.choices(vocab, k=rng.randint(0, 8))) for _ in range(600)]
    queries += [p.upper() + "!" for p in prompts[:20]]  # equal once normalised
    matcher = PromptMatcher(prompts, threshold)
    sets, exact = [word_set(p) for p in prompts], {normalize(p) for p in prompts}
    found = {"exact": 0, "near": 0, None: 0}
    for q in queries:
        if normalize(q) in exact:
            want = "exact"
        elif word_set(q) and any(jaccard(word_set(q), s) >= threshold for s in sets):
            want = "near"
        else:
            want = None
        assert matcher.match(q) == want, q
        found[want] += 1
    assert found["exact"] >= 20 and found[None] > 0
    if threshold <= 0.6:
        assert found["near"] > 0  # the index is exercised, not only the exact set
