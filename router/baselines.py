"""Baselines every evaluation reports, and the router the gateway uses with no trained artifact.

- `cheapest`: knows nothing about quality; every expert scores the same, so the policy's cost
  tie-break sends each query to the cheapest expert.
- `random`: a seeded uniform draw per query.
- `best_single`: every query to the expert with the best mean score on the training data.
- `oracle`: the true score of each expert on each training query (an upper bound; it can only
  score queries it has seen, by exact text).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from router.base import Router, register
from router.data import RoutingData

__all__ = ["BestSingleRouter", "CheapestRouter", "OracleRouter", "RandomRouter"]


@register
class CheapestRouter(Router):
    name = "cheapest"
    uses_embeddings = False

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        return np.full((len(queries), len(self.models_)), 0.5)


@register
class RandomRouter(Router):
    name = "random"
    uses_embeddings = False

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        return rng.random((len(queries), len(self.models_)))


@register
class BestSingleRouter(Router):
    name = "best_single"
    uses_embeddings = False

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        super().fit(data, embeddings)
        self.mean_scores_ = data.scores.mean(axis=0)
        return self

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        return np.tile(self.mean_scores_, (len(queries), 1))


@register
class OracleRouter(Router):
    name = "oracle"
    uses_embeddings = False

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        super().fit(data, embeddings)
        self.table_ = {p: data.scores[i] for i, p in enumerate(data.prompts)}
        return self

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        unknown = np.full(len(self.models_), 0.5)
        return np.stack([self.table_.get(q, unknown) for q in queries])
