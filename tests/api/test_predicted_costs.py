"""The gateway prices each expert with the reply length its trained router predicts."""

from __future__ import annotations

import pytest

from api.routing import RoutingService
from router.cluster import ClusterRouter
from router.policy import Policy
from router.query import estimate_tokens
from tests.router.pools import OLD, PRICES, only, pool


def test_estimated_costs_use_each_experts_predicted_reply_length() -> None:
    data, x = pool(300, seed=0)
    router = ClusterRouter(n_clusters=3).fit(only(data, OLD), x)
    service = RoutingService(router.experts_, {"cluster": router}, "cluster", Policy(), None, 256)
    predicted = service.predicted_reply_tokens(router, x[0])
    assert predicted == pytest.approx({"alpha": 800.0, "beta": 200.0, "cheap": 300.0})
    messages = [{"role": "user", "content": "x" * 400}]
    prompt = estimate_tokens(messages)
    costs = service.estimated_costs(messages, None, predicted)
    assert costs["alpha"] == pytest.approx((prompt + 800) * PRICES["alpha"] / 1e6)
    assert costs["beta"] == pytest.approx((prompt + 200) * PRICES["beta"] / 1e6)
    # the request's completion limit still caps the reply
    capped = service.estimated_costs(messages, 100, predicted)
    assert capped["alpha"] == pytest.approx((prompt + 100) * PRICES["alpha"] / 1e6)
    # an old artifact without a cost model: the configured expectation for everyone
    router.cost_model_ = None
    assert service.predicted_reply_tokens(router, x[0]) == {}


def test_reply_tokens_are_remembered_per_cost_model_and_vector() -> None:
    data, x = pool(300, seed=0)
    router = ClusterRouter(n_clusters=3).fit(only(data, OLD), x)
    service = RoutingService(router.experts_, {"cluster": router}, "cluster", Policy(), None, 256)
    first = service._reply_tokens(router, x[0])
    assert first == service.predicted_reply_tokens(router, x[0])
    assert service._reply_tokens(router, x[0].copy()) is first  # the same vector: remembered
    assert service._reply_tokens(router, x[1]) == service.predicted_reply_tokens(router, x[1])
    # a replaced cost model (onboarding builds a new one) is never answered from the old one
    other = ClusterRouter(n_clusters=3).fit(only(data, ("beta", "cheap")), x)
    router.cost_model_ = other.cost_model_
    assert service._reply_tokens(router, x[0]) is not first
    router.cost_model_ = None
    assert service._reply_tokens(router, x[0]) == {}
    service.scores.cache_size = 2  # bounded like the scores
    for row in x[:5]:
        service._reply_tokens(other, row)
    assert len(service._replies) <= 2
