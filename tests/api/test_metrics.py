"""`GET /metrics` after real traffic, read back with Prometheus's own text parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from api.keys import new_key
from tests.api.conftest import GatewayFactory

HELLO = [{"role": "user", "content": "Say hello"}]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:  # fmt: skip
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_what_the_gateway_did(make_gateway: GatewayFactory) -> None:
    async with make_gateway(cache="exact") as gw:
        post = gw.client.post
        auto = {"model": "coe-auto", "messages": HELLO, "temperature": 0}
        for _ in range(2):
            assert (await post("/v1/chat/completions", json=auto)).status_code == 200  # 2nd hit
        stream = {"model": "beta", "messages": HELLO, "stream": True}
        assert (await post("/v1/chat/completions", json=stream)).status_code == 200
        gw.network.down.add("alpha")  # coe-auto falls back to beta
        assert (await post("/v1/chat/completions", json={**auto, "seed": 1})).status_code == 200
        assert (await post("/v1/chat/completions", json={**auto, "model": "x"})).status_code == 404
        secret, key = new_key("k", rpm=1)
        await gw.app.state.store.add_key(key)
        assert (await post("/v1/chat/completions", json=auto)).status_code == 401
        headers = {"authorization": f"Bearer {secret}"}
        await post("/v1/chat/completions", json={**auto, "model": "beta"}, headers=headers)
        limited = await post("/v1/chat/completions", json=auto, headers=headers)
        assert limited.status_code == 429

        response = await gw.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        m = samples(response.text)

    requests = "coe_requests_total"
    assert value(m, requests, model="coe-auto", expert="alpha", status="200") == 2  # 1 cached
    assert value(m, requests, model="coe-auto", expert="beta", status="200") == 1
    assert value(m, requests, model="beta", expert="beta", status="200") == 2
    assert value(m, requests, model="unknown", expert="", status="404") == 1  # not a label
    assert value(m, requests, model="coe-auto", expert="", status="429") == 1
    latency = "coe_request_latency_seconds_count"
    assert value(m, latency, model="coe-auto", expert="alpha") == 1  # not the cache hit
    assert value(m, "coe_time_to_first_token_seconds_count", model="beta", expert="beta") == 1
    assert value(m, "coe_tokens_total", expert="alpha", kind="completion") == 3
    assert value(m, "coe_cost_usd_total", expert="alpha") > 0
    assert value(m, "coe_routing_decisions_total", router="cheapest", expert="alpha") == 2
    assert value(m, "coe_fallbacks_total", model="coe-auto") == 1
    assert value(m, "coe_cache_lookups_total", kind="exact", result="hit") == 1
    assert value(m, "coe_cache_lookups_total", kind="any", result="miss") >= 2
    assert value(m, "coe_rejections_total", reason="auth") == 1
    assert value(m, "coe_rejections_total", reason="rpm") == 1
    for expert in ("alpha", "beta"):
        assert value(m, "coe_expert_in_flight", expert=expert) == 0
        assert value(m, "coe_expert_queue_depth", expert=expert) == 0
        assert ("coe_expert_resident", frozenset({("expert", expert)})) in m
    assert value(m, "coe_expert_up", expert="alpha") == 0  # marked failed by the fallback
    assert value(m, "coe_expert_up", expert="beta") == 1


async def test_each_app_has_its_own_registry(make_gateway: GatewayFactory) -> None:
    async with make_gateway() as one, make_gateway() as two:
        await one.client.post("/v1/chat/completions", json={"model": "alpha", "messages": HELLO})
        m = samples((await two.client.get("/metrics")).text)
        assert value(m, "coe_requests_total", model="alpha", expert="alpha", status="200") == 0
