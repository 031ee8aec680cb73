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


def topic_pool(n: int, seed: int) -> tuple[RoutingData, np.ndarray]:
    """Two topics, and each query's embedding near its topic's axis: on topic `easy` the cheap
    experts are right with probability 0.9, independently (their agreement is reliable); on
    topic `hard` they are right together half the time and otherwise agree on the same wrong
    answer (their agreement means nothing). `strong` is always right, 100× dearer."""
    rng = np.random.default_rng(seed)
    hard = np.arange(n) % 2 == 1
    easy, shared = pair_pool(n, seed, p=0.9), pair_pool(n, seed + 1, correlated=True, p=0.5)
    scores = np.where(hard[:, None], shared.scores, easy.scores)
    assert easy.responses is not None and shared.responses is not None
    responses = np.where(hard[:, None], shared.responses, easy.responses)
    data = RoutingData(
        **{
            **easy.__dict__,
            "tasks": ["hard" if h else "easy" for h in hard],
            "scores": scores,
            "responses": responses,
        }
    )
    x = rng.normal(0.0, 0.15, (n, 4))
    x[:, 0] += ~hard
    x[:, 1] += hard
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return data, x.astype(np.float32)
