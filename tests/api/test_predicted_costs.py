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
