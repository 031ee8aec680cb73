"""A stacked router: per expert, a logistic regression on the member families' predictions.

`ensemble` averages its members with fixed weights. Stacking learns how far to trust each member
for each expert: `fit` computes every member's out-of-fold predicted quality on the training
queries (`folds`-fold, seeded: a member never scores a query it was fitted on), then fits for
each expert `logit p = w · logit(member scores) + b` (an L2-regularised logistic regression, `c`,
on the expert's observed scores), and finally refits the members on all the training data. The
members' out-of-fold scores are what the weights see, so an overfitting member (kNN with a small
k) is not trusted more than it earns.

Example::

    router = StackRouter((("cluster", {}), ("knn", {"k": 100}))).fit(data, embeddings)
    router.score(query_embeddings, queries)            # (n, m) in (0, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from router.base import ROUTERS, Router, register
from router.data import RoutingData
from router.neighbours import share_projections

__all__ = ["DEFAULT_STACK", "StackRouter"]

#: (family, hyperparameters) of the default members.
DEFAULT_STACK: tuple[tuple[str, dict[str, Any]], ...] = (
    ("cluster", {}),
    ("knn", {"k": 100}),
    ("category", {}),
)

_EPS = 1e-3


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


@register
class StackRouter(Router):
    """Per-expert logistic stacking of member routers; see the module docstring."""

    name = "stack"

    def __init__(
        self,
        members: Sequence[tuple[str, dict[str, Any]]] = DEFAULT_STACK,
        folds: int = 5,
        c: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.members = tuple(members)
        self.folds = folds
        self.c = c
        self.seed = seed

    def _members(self, data: RoutingData, embeddings: np.ndarray) -> list[Router]:
        unknown = [name for name, _ in self.members if name not in ROUTERS]
        if unknown:
            raise ValueError(f"unknown stack members {unknown}; known: {sorted(ROUTERS)}")
        routers = [ROUTERS[name](**params).fit(data, embeddings) for name, params in self.members]
        share_projections(routers)
        return routers

    def _features(self, routers: Sequence[Router], x: np.ndarray, prompts: Sequence[str]) -> Any:
        """`(n, m, members)` member logits."""
        return np.stack([_logit(r.score(x, prompts)) for r in routers], axis=2)

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        from sklearn.linear_model import LogisticRegression

        super().fit(data, embeddings)
        n, m = data.scores.shape
        oof = np.zeros((n, m, len(self.members)))
        order = np.random.default_rng(self.seed).permutation(n)
        for part in np.array_split(order, max(2, self.folds)):
            rest = np.setdiff1d(order, part)
            routers = self._members(data.take(np.sort(rest)), embeddings[np.sort(rest)])
            oof[part] = self._features(routers, embeddings[part], [data.prompts[i] for i in part])
        self.coef_ = np.zeros((m, len(self.members)))
        self.intercept_ = np.zeros(m)
        for j in range(m):
            y = np.clip(data.scores[:, j], 0.0, 1.0)
            # fractional scores: each query counts as a win with weight y and a loss with 1 - y
            x2 = np.concatenate([oof[:, j], oof[:, j]])
            labels = np.concatenate([np.ones(n), np.zeros(n)])
            weights = np.concatenate([y, 1.0 - y])
            if weights[:n].sum() == 0 or weights[n:].sum() == 0:  # one class: the base rate only
                self.intercept_[j] = float(_logit(np.array([y.mean()]))[0])
                continue
            model = LogisticRegression(C=self.c, max_iter=1000)
            model.fit(x2, labels, sample_weight=weights)
            self.coef_[j], self.intercept_[j] = model.coef_[0], model.intercept_[0]
        self.routers_ = self._members(data, embeddings)
        return self

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        feats = self._features(self.routers_, embeddings, queries)
        z = np.einsum("nmk,mk->nm", feats, self.coef_) + self.intercept_[None, :]
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)
