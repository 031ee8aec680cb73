"""Per-expert success predictors on the query embedding (Bench-CoE query-level routing).

One scikit-learn classifier per expert predicts P(expert answers well | embedding). Fractional
scores (F1-style tasks) are kept as soft labels: each query appears once as a success with weight
`score` and once as a failure with weight `1 − score`.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from router.base import Router, register
from router.data import RoutingData

__all__ = ["ClassifierRouter", "fit_soft_binary"]


def fit_soft_binary(estimator: Any, x: np.ndarray, y: np.ndarray) -> Any:
    """Fit `estimator` (with `sample_weight` support) on soft labels `y` in [0, 1].

    Returns the fitted estimator, or a float (the mean) when `y` is constant.
    """
    mean = float(np.mean(y))
    if np.all(y == y[0]):
        return mean
    xx = np.vstack([x, x])
    yy = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
    ww = np.concatenate([y, 1.0 - y])
    keep = ww > 0
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        # An optimiser stopped at max_iter still predicts usefully; cross-validation, not this
        # warning, is how the hyperparameters are judged.
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(xx[keep], yy[keep], sample_weight=ww[keep])
    return estimator


def predict_soft(model: Any, x: np.ndarray) -> np.ndarray:
    """P(success) from a model returned by `fit_soft_binary`."""
    if isinstance(model, float):
        return np.full(len(x), model)
    return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)


@register
class ClassifierRouter(Router):
    """Logistic regression (default) or an MLP per expert on the embedding.

    Example::

        router = ClassifierRouter(kind="logreg", c=1.0).fit(data, embeddings)
    """

    name = "classifier"

    def __init__(self, kind: str = "logreg", c: float = 1.0, hidden: int = 64, seed: int = 0):
        self.kind = kind
        self.c = c
        self.hidden = hidden
        self.seed = seed

    def _estimator(self) -> Any:
        if self.kind == "logreg":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(C=self.c, max_iter=2000)
        if self.kind == "mlp":
            from sklearn.neural_network import MLPClassifier

            if "sample_weight" not in inspect.signature(MLPClassifier.fit).parameters:
                raise ValueError(
                    "kind='mlp' needs scikit-learn >= 1.7 (soft labels use sample_weight): "
                    "upgrade scikit-learn or use kind='logreg'"
                )
            return MLPClassifier(
                hidden_layer_sizes=(self.hidden,),
                alpha=1.0 / self.c,
                solver="lbfgs",
                max_iter=500,
                random_state=self.seed,
            )
        raise ValueError(f"unknown classifier kind {self.kind!r}: use 'logreg' or 'mlp'")

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        super().fit(data, embeddings)
        x = np.asarray(embeddings, dtype=np.float64)
        self.estimators_ = [
            fit_soft_binary(self._estimator(), x, np.asarray(data.scores[:, j], dtype=np.float64))
            for j in range(len(self.models_))
        ]
        return self

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        x = np.asarray(embeddings, dtype=np.float64)
        return np.column_stack([predict_soft(est, x) for est in self.estimators_])
