"""An ensemble router: the weighted mean of other families' predicted qualities.

The families err differently: `category` knows the task's table but not the query, `knn` sees
the neighbourhood, `classifier` and `mf` a smooth function of the embedding. Averaging their
probability-like scores cuts the variance of each; the default members were chosen by
cross-validation on training data (see `training/cv.py`), never on a test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np

from router.base import ROUTERS, Router, register
from router.data import RoutingData
from router.neighbours import share_projections

__all__ = ["DEFAULT_MEMBERS", "EnsembleRouter"]

#: (family, weight, hyperparameters) of the default ensemble. Chosen by 5-fold CV on the
#: training sides of LLMRouter and RouteLLM MMLU (`benchmarks/router_cv.py`): adding
#: `classifier`, `mf` or `skills` to these two did not help on either. The neighbours are
#: compared in 64 dims (`router.neighbours`; 1.4 MB for LLMRouter's 5,608 rows, in cache):
#: CV AIQ on LLMRouter's training file within noise of the full width at 32-128 dims, and
#: 64 as fast as fewer (`benchmarks/knn_projection.py`; README "Performance").
DEFAULT_MEMBERS: tuple[tuple[str, float, dict[str, Any]], ...] = (
    ("category", 1.0, {}),
    ("knn", 1.0, {"k": 100, "dims": 64}),
)


@register
class EnsembleRouter(Router):
    """Weighted mean of member routers' scores.

    Example::

        router = EnsembleRouter((("category", 2.0, {}), ("knn", 1.0, {"k": 20}))).fit(data, emb)
    """

    name = "ensemble"

    def __init__(
        self, members: Sequence[tuple[str, float, dict[str, Any]]] = DEFAULT_MEMBERS
    ) -> None:
        self.members = tuple(members)

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        super().fit(data, embeddings)
        unknown = [name for name, _, _ in self.members if name not in ROUTERS]
        if unknown:
            raise ValueError(f"unknown ensemble members {unknown}; known: {sorted(ROUTERS)}")
        self.routers_ = [
            ROUTERS[name](**params).fit(data, embeddings) for name, _, params in self.members
        ]
        share_projections(self.routers_)
        weights = np.array([w for _, w, _ in self.members], dtype=np.float64)
        self.weights_ = weights / weights.sum()
        return self

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        parts = [r.score(embeddings, queries) for r in self.routers_]
        return np.asarray(np.tensordot(self.weights_, np.stack(parts), axes=1), dtype=np.float64)
