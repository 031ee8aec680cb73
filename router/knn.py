"""k-nearest-neighbour router (Bench-CoE query-level, RouterBench's KNN).

A query's predicted quality for each expert is the mean score of that expert on the `k` training
queries whose embeddings are most cosine-similar to it. With `weighted=True` neighbours count in
proportion to `exp(similarity / temperature)`, so near-duplicates dominate. With `dims` the
similarities are computed in the training embeddings' leading `dims` singular directions
(`router.neighbours`): the training vectors then fit in cache (64 dims: 1.4 MB for 5,608).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from router.base import Router, register
from router.data import RoutingData
from router.neighbours import Projection, reduce, similarity

__all__ = ["KNNRouter"]


@register
class KNNRouter(Router):
    """Mean outcome over the `k` nearest training queries.

    Example::

        router = KNNRouter(k=40).fit(data, embeddings)
        router.score(query_embeddings, queries)   # (n, m), each entry a neighbourhood mean
    """

    name = "knn"
    #: Set by `fit` when `dims` is given; routers saved before `dims` existed have neither.
    projection_: Projection | None = None
    reduced_: np.ndarray | None = None

    def __init__(
        self,
        k: int = 40,
        weighted: bool = False,
        temperature: float = 0.05,
        dims: int | None = None,
    ) -> None:
        self.k = k
        self.weighted = weighted
        self.temperature = temperature
        self.dims = dims

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        super().fit(data, embeddings)
        self.embeddings_ = np.asarray(embeddings, dtype=np.float32)
        self.scores_ = np.asarray(data.scores, dtype=np.float32)
        self.projection_, self.reduced_ = reduce(self.embeddings_, self.dims)
        return self

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        sim = similarity(embeddings, self.embeddings_, self.projection_, self.reduced_)
        k = min(self.k, sim.shape[1])
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        near_sim = np.take_along_axis(sim, nearest, axis=1)
        if self.weighted:
            weights = np.exp((near_sim - near_sim.max(axis=1, keepdims=True)) / self.temperature)
        else:
            weights = np.ones_like(near_sim)
        weights /= weights.sum(axis=1, keepdims=True)
        mixed = np.einsum("nk,nkm->nm", weights, self.scores_[nearest])
        return np.asarray(mixed, dtype=np.float64)
