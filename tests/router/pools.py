"""A synthetic pool with a known answer for the cluster router, cost model and onboarding."""

from __future__ import annotations

import numpy as np

from router.data import RoutingData
from router.descriptor import ExpertDescriptor

OLD = ("alpha", "beta", "cheap")
PRICES = {"alpha": 1.0, "beta": 1.0, "cheap": 0.1, "newbie": 0.5, "meh": 0.5}


def pool(
    n: int, seed: int, models: tuple[str, ...] = (*OLD, "newbie")
) -> tuple[RoutingData, np.ndarray]:
    """Three topics (tight clusters). alpha is right on topic 0, beta on topic 1, cheap on a
    random 40%; on topic 2 all three are right 30% of the time and `newbie` always is (newbie
    is wrong elsewhere). `meh` (not in the default models) is right on a random 30% everywhere,
    at newbie's price: never worth choosing. Replies of alpha are 4× longer than beta's."""
    rng = np.random.default_rng(seed)
    topic = np.arange(n) % 3
    x = np.zeros((n, 16))
    x[np.arange(n), topic] = 1.0
    x += rng.normal(0, 0.1, x.shape)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    right = {
        "alpha": np.where(topic == 2, rng.random(n) < 0.3, topic == 0),
        "beta": np.where(topic == 2, rng.random(n) < 0.3, topic == 1),
        "cheap": rng.random(n) < np.where(topic == 2, 0.3, 0.4),
        "newbie": topic == 2,
        "meh": rng.random(n) < 0.3,
    }
    reply_tokens = {"alpha": 800, "beta": 200, "cheap": 300, "newbie": 300, "meh": 300}
    prompt_tokens = np.full(n, 100.0)
    costs = np.column_stack(
        [(100 * PRICES[m] + reply_tokens[m] * PRICES[m]) / 1e6 for m in models]
    ) * np.ones((n, 1))
    data = RoutingData(
        query_ids=[f"q{seed}-{i}" for i in range(n)],
        prompts=[f"question {i}" for i in range(n)],
        tasks=[f"topic{t}" for t in topic],
        models=models,
        scores=np.column_stack([right[m] for m in models]).astype(float),
        costs=costs,
        experts=[ExpertDescriptor(m, PRICES[m], PRICES[m]) for m in models],
        prompt_tokens=prompt_tokens,
    )
    return data, x.astype(np.float32)


def only(data: RoutingData, names: tuple[str, ...]) -> RoutingData:
    cols = [data.models.index(m) for m in names]
    return RoutingData(
        query_ids=data.query_ids,
        prompts=data.prompts,
        tasks=data.tasks,
        models=names,
        scores=data.scores[:, cols],
        costs=data.costs[:, cols],
        experts=[data.experts[j] for j in cols],
        prompt_tokens=data.prompt_tokens,
    )
