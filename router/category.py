"""Two-step routing (Composition of Experts; Bench-CoE subject-level).

Step 1 maps a query to a category: a multinomial logistic regression on the embedding, trained on
the data's task/subject labels, or on k-means clusters of the embeddings when the data has no
labels. Step 2 looks the category up in a category → expert quality table learned from the data
(each cell is the expert's mean score on that category, shrunk toward its overall mean by
`prior` pseudo-queries so a thin category does not swing on a few answers).

With `soft=True` the prediction mixes the table rows by the classifier's probabilities, which is
better calibrated near category borders than taking the most likely row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from router.base import Router, register
from router.data import RoutingData

__all__ = ["CategoryRouter", "category_labels"]


def category_labels(
    data: RoutingData, embeddings: np.ndarray, n_clusters: int, seed: int
) -> np.ndarray:
    """Task labels where every query has one, otherwise k-means cluster ids (as strings)."""
    if all(t is not None and t != "" for t in data.tasks):
        return np.asarray([str(t) for t in data.tasks])
    from sklearn.cluster import KMeans

    k = max(1, min(n_clusters, len(data)))
    clusters = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(embeddings)
    return np.asarray([f"cluster-{c}" for c in clusters])


@register
class CategoryRouter(Router):
    """Query → category → expert table.

    Example::

        router = CategoryRouter(prior=5.0).fit(data, embeddings)
        router.categories_          # the category names, in table row order
        router.table_               # (categories, experts) mean quality
    """

    name = "category"

    def __init__(
        self,
        prior: float = 5.0,
        soft: bool = True,
        c: float = 10.0,
        n_clusters: int = 16,
        seed: int = 0,
    ) -> None:
        self.prior = prior
        self.soft = soft
        self.c = c
        self.n_clusters = n_clusters
        self.seed = seed

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        super().fit(data, embeddings)
        labels = category_labels(data, embeddings, self.n_clusters, self.seed)
        self.categories_ = sorted(set(labels.tolist()))
        index = {c: i for i, c in enumerate(self.categories_)}
        y = np.asarray([index[c] for c in labels])
        overall = data.scores.mean(axis=0)
        table = np.empty((len(self.categories_), len(self.models_)))
        for i in range(len(self.categories_)):
            rows = data.scores[y == i]
            table[i] = (rows.sum(axis=0) + self.prior * overall) / (len(rows) + self.prior)
        self.table_ = table
        if len(self.categories_) > 1:
            from sklearn.linear_model import LogisticRegression

            self.classifier_: object = LogisticRegression(C=self.c, max_iter=2000).fit(
                np.asarray(embeddings, dtype=np.float64), y
            )
        else:
            self.classifier_ = None
        return self

    def category_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """P(category | query), shape `(n, len(categories_))`."""
        if self.classifier_ is None:
            return np.ones((len(embeddings), 1))
        x = np.asarray(embeddings, dtype=np.float64)
        coef = getattr(self.classifier_, "coef_", None)
        if coef is None or coef.shape[0] < 3:  # binary: sklearn's logistic, not a softmax
            proba = self.classifier_.predict_proba(x)  # type: ignore[attr-defined]
            return np.asarray(proba, dtype=np.float64)
        # sklearn's multinomial `predict_proba`, the same operations in the same order (so the
        # same bits) without its per-call input validation, which cost more than the product
        # itself on one query (~70 of 85 µs): this runs on every routed request.
        logits = x @ coef.T + self.classifier_.intercept_  # type: ignore[attr-defined]
        logits -= logits.max(axis=1).reshape(-1, 1)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1).reshape(-1, 1)
        return np.asarray(logits, dtype=np.float64)

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        proba = self.category_proba(embeddings)
        if not self.soft:
            proba = np.eye(proba.shape[1])[proba.argmax(axis=1)]
        return np.asarray(proba @ self.table_, dtype=np.float64)
