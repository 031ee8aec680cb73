"""Input an attacker chooses cannot stall the gateway, bloat its memory or its metrics."""

from __future__ import annotations

import time
import tracemalloc

from tests.conftest import Gateway

HELLO = [{"role": "user", "content": "Say hello"}]


async def test_a_huge_max_tokens_on_compose_is_computed_not_allocated(gateway: Gateway) -> None:
    body = {"model": "coe-compose", "messages": HELLO, "max_tokens": 10**8, "coe": {"k": 2}}
    tracemalloc.start()
    try:
        response = await gateway.client.post("/v1/chat/completions", json=body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200
    assert peak < 50 * 2**20  # "x" * 4 * max_tokens was 400 MB here (4 GB at 10**9)
    assert all(r["max_tokens"] <= 4096 for f in gateway.fakes.values() for r in f.requests)


async def test_an_unknown_model_name_is_bounded_and_labelled_unknown(gateway: Gateway) -> None:
    huge = {"model": "m" * 1_000_000, "messages": HELLO}
    started = time.perf_counter()
    refused = await gateway.client.post("/v1/chat/completions", json=huge)
    assert refused.status_code in (400, 413) and time.perf_counter() - started < 2
    unknown = await gateway.client.post(
        "/v1/chat/completions", json={"model": "no-such-model-123", "messages": HELLO}
    )
    assert unknown.status_code == 404
    metrics = (await gateway.client.get("/metrics")).text
    assert "no-such-model-123" not in metrics
    assert 'model="unknown"' in metrics
    long = {"model": "m" * 300, "messages": HELLO}
    response = await gateway.client.post("/v1/chat/completions", json=long)
    assert response.status_code == 400 and response.json()["error"]["param"] == "model"
