"""Paired bootstrap intervals: centred on the paired difference, wide as its noise."""

import numpy as np
import pytest

from bds.stats import paired_bootstrap


def test_identical_methods_give_a_zero_interval():
    x = np.arange(12, dtype=float).reshape(3, 4)
    r = paired_bootstrap(x, x)
    assert (r["mean"], r["low"], r["high"]) == (0.0, 0.0, 0.0)
    assert (r["seeds"], r["items"]) == (3, 4)


def test_a_constant_shift_is_recovered_exactly():
    rng = np.random.default_rng(0)
    b = rng.random((5, 50))
    r = paired_bootstrap(b + 0.25, b)  # pairing cancels all the per-item noise
    assert r["low"] == pytest.approx(0.25) and r["high"] == pytest.approx(0.25)


def test_interval_covers_the_true_difference_and_excludes_zero():
    rng = np.random.default_rng(1)
    a = rng.random((5, 200)) < 0.3
    b = rng.random((5, 200)) < 0.1
    r = paired_bootstrap(a, b, resamples=1000)
    assert r["low"] < 0.2 < r["high"]
    assert r["low"] > 0.0
    # a single seed on a few items cannot tell them apart
    small = paired_bootstrap(a[:1, :20], b[:1, :20], resamples=1000)
    assert small["high"] - small["low"] > r["high"] - r["low"]


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="seeds x items"):
        paired_bootstrap([1.0, 2.0], [1.0, 2.0])
