"""Boosted trees exported from scikit-learn score exactly as scikit-learn does."""

import numpy as np
import pytest


def _fitted(x, y, **kwargs):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(random_state=0, **kwargs).fit(x, y)


def test_exported_trees_match_sklearn_on_new_rows_and_round_trip():
    from bds.eval.judges.trees import TreeEnsemble

    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6))
    y = ((x[:, 0] * x[:, 1] > 0) ^ (x[:, 2] > 1)).astype(int)  # needs interactions
    model = _fitted(x, y, max_iter=50, max_leaf_nodes=7)
    trees = TreeEnsemble.from_sklearn(model, check=x)
    fresh = rng.normal(size=(300, 6))
    fresh[:5, 0] = np.nan  # missing values follow the learned side
    expected = model.predict_proba(fresh)[:, 1]
    assert np.allclose(trees.predict_proba(fresh), expected, atol=1e-9)
    assert ((trees.predict_proba(x) > 0.5) == y).mean() > 0.9  # it learned the interaction
    again = TreeEnsemble.from_arrays(trees.arrays())
    assert np.array_equal(again.predict_proba(fresh), trees.predict_proba(fresh))
    assert trees.predict_proba(np.zeros((0, 6))).shape == (0,)


def test_export_check_catches_a_wrong_export_and_short_rows_are_refused():
    from bds.eval.judges.trees import TreeEnsemble

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    model = _fitted(x, (x[:, 2] > 0).astype(int), max_iter=10)
    model._baseline_prediction = model._baseline_prediction + 1.0  # sklearn's internals moved
    model.predict_proba = lambda rows: np.stack([np.zeros(len(rows)), np.full(len(rows), 0.5)], 1)
    with pytest.raises(RuntimeError, match="different probabilities"):
        TreeEnsemble.from_sklearn(model, check=x)
    trees = TreeEnsemble.from_sklearn(_fitted(x, (x[:, 2] > 0).astype(int), max_iter=10))
    with pytest.raises(ValueError, match="use 3 features"):
        trees.predict_proba(x[:, :2])
