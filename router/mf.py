"""Matrix-factorisation router (RouteLLM's best router), generalised from two models to N.

Each expert j has a learned vector `v_j`; a query is projected into the same space,
`h = W·x + b`, from its embedding `x`. The predicted quality is `σ(v_j · h + c_j)`. RouteLLM
scores the difference between a strong and a weak model; with N experts we predict each expert's
success directly and train every expert's head jointly, so the projection is shared (experts with
little data borrow strength from the others).

Training minimises binary cross-entropy against the (possibly fractional) scores with L2 weight
decay, full-batch Adam, seeded: the same data and seed give the same router.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from router.base import Router, register
from router.data import RoutingData

__all__ = ["MFRouter"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


class _Adam:
    """Adam on a list of arrays, updated in place."""

    def __init__(self, params: list[np.ndarray], lr: float) -> None:
        self.params, self.lr = params, lr
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, grads: list[np.ndarray]) -> None:
        self.t += 1
        b1, b2 = 0.9, 0.999
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            m_hat = m / (1 - b1**self.t)
            v_hat = v / (1 - b2**self.t)
            p -= self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


@register
class MFRouter(Router):
    """σ(expert vector · projected query + expert bias), trained jointly over experts.

    Example::

        router = MFRouter(dim=32, epochs=400, seed=0).fit(data, embeddings)
    """

    name = "mf"

    def __init__(
        self,
        dim: int = 32,
        epochs: int = 400,
        lr: float = 0.01,
        weight_decay: float = 1e-4,
        seed: int = 0,
    ) -> None:
        self.dim = dim
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        super().fit(data, embeddings)
        x = np.asarray(embeddings, dtype=np.float64)
        y = np.asarray(data.scores, dtype=np.float64)
        n, d = x.shape
        m = y.shape[1]
        rng = np.random.default_rng(self.seed)
        w = rng.normal(0.0, 1.0 / np.sqrt(d), (d, self.dim))
        b = np.zeros(self.dim)
        v = rng.normal(0.0, 1.0 / np.sqrt(self.dim), (m, self.dim))
        mean = np.clip(y.mean(axis=0), 1e-3, 1 - 1e-3)
        c = np.log(mean / (1 - mean))
        adam = _Adam([w, b, v, c], self.lr)
        for _ in range(self.epochs):
            h = x @ w + b
            g = (_sigmoid(h @ v.T + c) - y) / (n * m)
            dh = g @ v
            adam.step(
                [
                    x.T @ dh + self.weight_decay * w,
                    dh.sum(axis=0),
                    g.T @ h + self.weight_decay * v,
                    g.sum(axis=0),
                ]
            )
        self.w_, self.b_, self.v_, self.c_ = w, b, v, c
        return self

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        h = np.asarray(embeddings, dtype=np.float64) @ self.w_ + self.b_
        return _sigmoid(h @ self.v_.T + self.c_)
