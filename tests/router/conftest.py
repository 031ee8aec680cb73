"""A synthetic routing problem whose right answer is known.

Two topics, each a tight cluster in embedding space. Model `alpha` is always right on topic 0
and wrong on topic 1, `beta` the reverse, and `cheap` is right half the time on both at a tenth of
the price. A router that learned anything sends topic 0 to alpha and topic 1 to beta.
"""

from __future__ import annotations

import numpy as np
import pytest

from router.data import RoutingData
from router.descriptor import ExpertDescriptor

MODELS = ("alpha", "beta", "cheap")
EXPERTS = (
    ExpertDescriptor("alpha", 1.0, 1.0),
    ExpertDescriptor("beta", 1.0, 1.0),
    ExpertDescriptor("cheap", 0.1, 0.1),
)


def make_topics(n: int, seed: int) -> tuple[RoutingData, np.ndarray]:
    rng = np.random.default_rng(seed)
    dim = 16
    centres = np.zeros((2, dim))
    centres[0, 0] = centres[1, 1] = 1.0
    topic = np.arange(n) % 2
    x = centres[topic] + rng.normal(0, 0.15, (n, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    scores = np.zeros((n, 3))
    scores[:, 0] = topic == 0
    scores[:, 1] = topic == 1
    scores[:, 2] = rng.random(n) < 0.5
    costs = np.tile([1e-3, 1e-3, 1e-4], (n, 1))
    data = RoutingData(
        query_ids=[f"q{i}" for i in range(n)],
        prompts=[f"topic {t} question {i}" for i, t in enumerate(topic)],
        tasks=[f"topic{t}" for t in topic],
        models=MODELS,
        scores=scores,
        costs=costs,
        experts=EXPERTS,
    )
    return data, x.astype(np.float32)


@pytest.fixture
def topics() -> tuple[RoutingData, np.ndarray]:
    return make_topics(120, seed=0)


@pytest.fixture
def held_out() -> tuple[RoutingData, np.ndarray]:
    return make_topics(40, seed=1)
