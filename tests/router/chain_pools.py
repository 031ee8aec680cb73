"""A synthetic pool for agreement chains: two cheap experts and a strong one, answer known."""

from __future__ import annotations

import numpy as np

from router.data import RoutingData
from router.descriptor import ExpertDescriptor

MODELS = ["cheap-a", "cheap-b", "strong"]
COSTS = [1e-5, 1.2e-5, 1e-3]


def pair_pool(n: int, seed: int, correlated: bool = False, p: float = 0.8) -> RoutingData:
    """`cheap-a`, `cheap-b` right with probability `p` (independently, or both on the same
    queries with the same wrong answer when `correlated`); `strong` always right, 100× dearer."""
    rng = np.random.default_rng(seed)
    right = rng.random((n, 2)) < p
    if correlated:
        right[:, 1] = right[:, 0]
    responses = np.empty((n, 3), dtype=object)
    for i in range(n):
        shared = int(rng.integers(100, 100_000))
        for j in range(2):
            wrong = shared if correlated else int(rng.integers(100, 100_000))
            responses[i, j] = f"Working it out.\n#### {7 if right[i, j] else wrong}"
        responses[i, 2] = "Carefully: 7.\n#### 7"
    scores = np.concatenate([right.astype(float), np.ones((n, 1))], axis=1)
    return RoutingData(
        query_ids=[f"q{i}" for i in range(n)],
        prompts=[f"Compute item {i}." for i in range(n)],
        tasks=["arithmetic"] * n,
        models=MODELS,
        scores=scores,
        costs=np.tile(COSTS, (n, 1)),
        experts=[ExpertDescriptor(m, c * 1e5, c * 2e5) for m, c in zip(MODELS, COSTS, strict=True)],
        responses=responses,
    )
