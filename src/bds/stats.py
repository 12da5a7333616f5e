"""Small statistics used in summaries (no heavy dependencies)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """P(score of a positive > score of a negative), ties counting one half (Mann-Whitney U).

    None when either group is empty or holds a non-finite score (NaN compares unequal to
    itself, so the tie groups below would never end; an AUROC of NaN scores means nothing).
    O((P + N) log(P + N)) through ranks.
    """
    if not positive or not negative:
        return None
    if not all(math.isfinite(s) for s in (*positive, *negative)):
        return None
    scored = sorted([(s, 1) for s in positive] + [(s, 0) for s in negative])
    rank_sum, i = 0.0, 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        mean_rank = (i + j + 1) / 2  # average of 1-based ranks i+1..j
        rank_sum += mean_rank * sum(label for _, label in scored[i:j])
        i = j
    n_pos, n_neg = len(positive), len(negative)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
