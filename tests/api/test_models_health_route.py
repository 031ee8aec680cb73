"""`/v1/models`, `/health`, `/ready` and `/v1/route`."""

from __future__ import annotations

import pytest

from tests.conftest import Gateway

pytestmark = pytest.mark.asyncio


async def test_models_lists_experts_and_virtual_models(gateway: Gateway) -> None:
    r = await gateway.client.get("/v1/models")
    ids = [m["id"] for m in r.json()["data"]]
    assert ids == ["alpha", "beta", "coe-auto", "coe-compose"]
    beta = r.json()["data"][1]
    assert beta["coe"]["input_price"] == 3.0 and beta["owned_by"] == "coe:vllm"


async def test_health_and_ready(gateway: Gateway) -> None:
    assert (await gateway.client.get("/health")).json() == {"status": "ok"}
    r = await gateway.client.get("/ready")
    assert r.status_code == 200
    assert r.json()["experts"]["alpha"]["status"] == "ok"
    gateway.network.down.add("alpha")
    r = await gateway.client.get("/ready")
    assert r.status_code == 200
    assert r.json()["experts"]["alpha"]["status"].startswith("unreachable")
    gateway.network.down.add("beta")
    r = await gateway.client.get("/ready")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


async def test_route_explains_without_calling_any_expert(gateway: Gateway) -> None:
    payload = {
        "model": "coe-auto",
        "messages": [{"role": "user", "content": "2+2?"}],
        "coe": {"cost_weight": 1.0},
    }
    r = await gateway.client.post("/v1/route", json=payload)
    assert r.status_code == 200
    decision = r.json()
    assert decision["router"] == "cheapest"
    assert decision["chosen"] == "alpha"
    assert decision["ranked"] == ["alpha", "beta"]
    experts = {e["name"]: e for e in decision["experts"]}
    assert experts["beta"]["estimated_cost_usd"] > experts["alpha"]["estimated_cost_usd"]
    assert experts["alpha"]["utility"] > experts["beta"]["utility"]
    assert gateway.fakes["alpha"].requests == [] and gateway.fakes["beta"].requests == []


async def test_route_ranks_a_down_expert_last(gateway: Gateway) -> None:
    gateway.network.down.add("alpha")
    await gateway.client.post(
        "/v1/chat/completions",
        json={"model": "coe-auto", "messages": [{"role": "user", "content": "x"}]},
    )
    r = await gateway.client.post(
        "/v1/route", json={"model": "coe-auto", "messages": [{"role": "user", "content": "x"}]}
    )
    assert r.json()["ranked"] == ["beta", "alpha"]
    assert {e["name"]: e["available"] for e in r.json()["experts"]} == {
        "alpha": False,
        "beta": True,
    }
