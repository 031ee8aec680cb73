"""IRT-smoothed neighbours: query difficulty × expert ability, then the nearest training queries.

A kNN router estimates each expert's accuracy near a query from that expert's own outcomes on
the `k` neighbours, independently per expert: with 0/1 outcomes and k = 40 that estimate has a
standard error near 0.08, as large as the gaps routing has to find. Yet every neighbour was
answered by *every* expert, and how the other experts did on it says how hard it is. An item
response model reads that: `fit` fits, on the training outcomes alone,

    logit P(expert j right on query i) = a_j + b_j · z_i,        z_i ~ N(0, I_rank)

(`a_j` the expert's ability, `z_i` the query's latent traits, difficulty first, `b_j` how the
expert loads on them; MAP, full-batch Adam, seeded), and replaces each training outcome by its
fitted probability. A new query's predicted quality is then the similarity-weighted mean of the
fitted probabilities of its `k` nearest training queries (cosine, softmax with `temperature`).
Averaging neighbours' probabilities rather than a point estimate of the query's own traits
keeps the prediction as uncertain as the neighbourhood is mixed.

With a large `rank` the fit reproduces the outcomes and this is kNN; with rank 1 it is pure
difficulty × ability. Which rank suits a pool is a cross-validation question
(`coe train --router auto`, `benchmarks/router_cv.py`).

Example::

    router = IRTRouter(rank=2, k=40).fit(data, embeddings)
    router.score(query_embeddings, queries)      # (n, m) in (0, 1)
    router.ability_                              # (m,) a_j
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from router.base import Router, register
from router.data import RoutingData
from router.mf import _Adam, _sigmoid
from router.neighbours import Projection, reduce, similarity

__all__ = ["IRTRouter", "fit_irt"]

_EPS = 1e-3


def fit_irt(
    scores: np.ndarray, rank: int, l2: float, steps: int, lr: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAP fit of `logit p_ij = a_j + b_j · z_i` to `scores` (n, m) in [0, 1] (fractional
    scores are soft labels). Returns `(a (m,), b (m, rank), z (n, rank))`.

    The prior is N(0, 1) on each `z_i` component and N(0, 1/l2) on each `b_j` component; `a`
    starts at each expert's logit mean accuracy, so with rank 0 this is the best single model.
    """
    y = np.asarray(scores, dtype=np.float64)
    n, m = y.shape
    rng = np.random.default_rng(seed)
    mean = np.clip(y.mean(axis=0), _EPS, 1 - _EPS)
    a = np.log(mean / (1 - mean))
    b = rng.normal(0.0, 0.1, (m, rank))
    z = rng.normal(0.0, 0.1, (n, rank))
    adam = _Adam([a, b, z], lr)
    for _ in range(steps):
        g = _sigmoid(a + z @ b.T) - y  # d BCE / d logit, per entry
        adam.step([g.sum(axis=0) / n, (g.T @ z + l2 * b) / n, (g @ b + z) / n])
    return a, b, z


@register
class IRTRouter(Router):
    """Similarity-weighted mean of the neighbours' IRT-fitted success probabilities."""

    name = "irt"
    #: As `KNNRouter`'s: the training vectors in `dims` leading singular directions, or None.
    projection_: Projection | None = None
    reduced_: np.ndarray | None = None

    def __init__(
        self,
        rank: int = 2,
        k: int = 40,
        temperature: float = 0.05,
        l2: float = 1.0,
        steps: int = 500,
        lr: float = 0.05,
        seed: int = 0,
        dims: int | None = None,
    ) -> None:
        self.rank = rank
        self.k = k
        self.temperature = temperature
        self.l2 = l2
        self.steps = steps
        self.lr = lr
        self.seed = seed
        self.dims = dims

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        super().fit(data, embeddings)
        a, b, z = fit_irt(data.scores, self.rank, self.l2, self.steps, self.lr, self.seed)
        self.ability_, self.loadings_, self.traits_ = a, b, z
        self.fitted_ = np.asarray(_sigmoid(a + z @ b.T), dtype=np.float32)
        self.embeddings_ = np.asarray(embeddings, dtype=np.float32)
        self.projection_, self.reduced_ = reduce(self.embeddings_, self.dims)
        return self

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        sim = similarity(embeddings, self.embeddings_, self.projection_, self.reduced_)
        k = min(self.k, sim.shape[1])
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        near = np.take_along_axis(sim, nearest, axis=1).astype(np.float64)
        weights = np.exp((near - near.max(axis=1, keepdims=True)) / self.temperature)
        weights /= weights.sum(axis=1, keepdims=True)
        mixed = np.einsum("nk,nkm->nm", weights, self.fitted_[nearest].astype(np.float64))
        return np.asarray(mixed, dtype=np.float64)
