"""The poison mixer: D_ft of size N with harmful ratio p, seeded and reproducible."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from bds.data.schema import Record
from bds.errors import BDSInputError

MixStrategy = Literal["exact", "interleave"]


@dataclass
class Mix:
    records: list[Record]
    n_harmful: int
    n_benign: int
    strategy: str


def mix_finetune_set(
    benign: list[Record],
    harmful: list[Record],
    n: int,
    harmful_ratio: float,
    strategy: MixStrategy = "exact",
    seed: int = 0,
) -> Mix:
    """Draw N samples, a fraction p of them harmful, in a seeded random order.

    `exact`: exactly round(p * N) harmful samples (the default: the ratio you ask for is
    the ratio you get). `interleave`: each position is harmful with probability p, as the
    reference code builds D_ft (e.g. 98 harmful of 1000 at p=0.1).
    """
    if not 0.0 <= harmful_ratio <= 1.0:
        raise BDSInputError(f"data.harmful_ratio must be in [0, 1], got {harmful_ratio}")
    if n < 1:
        raise BDSInputError(f"data.n must be >= 1, got {n}")
    rng = random.Random(seed)
    if strategy == "exact":
        n_harmful = round(harmful_ratio * n)
        _check_enough(n_harmful, len(harmful), "harmful", n, harmful_ratio)
        _check_enough(n - n_harmful, len(benign), "benign", n, harmful_ratio)
        picked = rng.sample(harmful, n_harmful) + rng.sample(benign, n - n_harmful)
        rng.shuffle(picked)
    elif strategy == "interleave":
        is_harmful = [rng.random() < harmful_ratio for _ in range(n)]
        n_harmful = sum(is_harmful)
        _check_enough(n_harmful, len(harmful), "harmful", n, harmful_ratio)
        _check_enough(n - n_harmful, len(benign), "benign", n, harmful_ratio)
        harm_iter = iter(rng.sample(harmful, n_harmful))
        ben_iter = iter(rng.sample(benign, n - n_harmful))
        picked = [next(harm_iter) if h else next(ben_iter) for h in is_harmful]
    else:
        raise BDSInputError(f"data.mix must be exact or interleave, got {strategy!r}")
    return Mix(picked, n_harmful, n - n_harmful, strategy)


def _check_enough(need: int, have: int, kind: str, n: int, p: float) -> None:
    if need > have:
        raise BDSInputError(
            f"data.n={n} with harmful_ratio={p} needs {need} {kind} samples but the {kind} "
            f"source holds {have}; lower data.n or data.harmful_ratio, or add data"
        )


def sample_alignment(records: list[Record], n: int | None, seed: int = 0) -> list[Record]:
    """The alignment set D_safe: all records, or a seeded sample of n of them."""
    if n is None or n == len(records):
        return list(records)
    if n > len(records):
        raise BDSInputError(
            f"data.n_alignment={n} but the alignment source holds {len(records)}; lower it or omit it"
        )
    return random.Random(seed + 1).sample(records, n)
