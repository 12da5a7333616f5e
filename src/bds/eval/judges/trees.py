"""Gradient-boosted trees as plain arrays: fitted with scikit-learn, evaluated with numpy.

The refusal classifier is scikit-learn's HistGradientBoostingClassifier. Its fitted trees
are exported to a few arrays (saved as safetensors, no pickle), so scoring needs neither
scikit-learn nor trusting a pickled object in the cache. The export is checked against
scikit-learn's own probabilities when it is made, so a change in scikit-learn's internals
fails at training time instead of giving wrong verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

ARRAYS = ("feature", "threshold", "left", "right", "is_leaf", "missing_left", "value")


@dataclass
class TreeEnsemble:
    """Binary boosted trees: P(y = 1) = sigmoid(baseline + sum of the reached leaf values).

    Arrays are [trees, nodes], padded to the largest tree (padding nodes are never reached).
    A sample goes left when its feature is <= threshold, or, when missing, if missing_left.
    """

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    is_leaf: np.ndarray
    missing_left: np.ndarray
    value: np.ndarray
    baseline: float

    @property
    def n_features_used(self) -> int:
        return int(self.feature[~self.is_leaf].max(initial=-1)) + 1

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(y = 1) for each row of `x`."""
        x = np.asarray(x, dtype=np.float64)
        if len(x) == 0:
            return np.zeros(0)
        if x.shape[1] < self.n_features_used:
            raise ValueError(
                f"the trees use {self.n_features_used} features, rows have {x.shape[1]}"
            )
        trees = np.arange(self.feature.shape[0])[:, None]
        rows = np.arange(len(x))[None, :]
        node = np.zeros((self.feature.shape[0], len(x)), dtype=np.int64)
        for _ in range(self.feature.shape[1]):  # depth <= nodes; usually stops far sooner
            leaf = self.is_leaf[trees, node]
            if leaf.all():
                break
            values = x[rows, self.feature[trees, node]]
            go_left = np.where(
                np.isnan(values),
                self.missing_left[trees, node],
                values <= self.threshold[trees, node],
            )
            step = np.where(go_left, self.left[trees, node], self.right[trees, node])
            node = np.where(leaf, node, step)
        raw = self.baseline + self.value[trees, node].sum(axis=0)
        return 1.0 / (1.0 + np.exp(-raw))

    def arrays(self) -> dict[str, np.ndarray]:
        out = {name: getattr(self, name) for name in ARRAYS}
        out["baseline"] = np.asarray([self.baseline])
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> TreeEnsemble:
        return cls(
            **{name: np.asarray(arrays[name]) for name in ARRAYS},
            baseline=float(arrays["baseline"][0]),
        )

    @classmethod
    def from_sklearn(cls, model: Any, check: np.ndarray | None = None) -> TreeEnsemble:
        """Export a fitted binary HistGradientBoostingClassifier (numeric features only).

        `check`: rows on which the export must reproduce the model's probabilities.
        """
        trees = [predictors[0].nodes for predictors in model._predictors]
        if any(t["is_categorical"].any() for t in trees):
            raise ValueError("categorical splits are not supported by the export")
        width = max(len(t) for t in trees)

        def stack(field: str, dtype: Any, fill: Any) -> np.ndarray:
            out = np.full((len(trees), width), fill, dtype=dtype)
            for i, t in enumerate(trees):
                out[i, : len(t)] = t[field]
            return out

        ensemble = cls(
            feature=stack("feature_idx", np.int64, 0),
            threshold=stack("num_threshold", np.float64, 0.0),
            left=stack("left", np.int64, 0),
            right=stack("right", np.int64, 0),
            is_leaf=stack("is_leaf", bool, True),
            missing_left=stack("missing_go_to_left", bool, False),
            value=stack("value", np.float64, 0.0),
            baseline=float(np.ravel(model._baseline_prediction)[0]),
        )
        if check is not None and len(check):
            expected = model.predict_proba(check)[:, 1]
            got = ensemble.predict_proba(check)
            if not np.allclose(expected, got, atol=1e-6):
                raise RuntimeError(
                    "exporting the trees from scikit-learn gave different probabilities "
                    f"(max difference {np.abs(expected - got).max():.2e}); this scikit-learn "
                    "version is not supported by bds.eval.judges.trees"
                )
        return ensemble
