"""Every request ends up in the store's request log, answered or failed, JSON or stream."""

from __future__ import annotations

import pytest

from api.store import FeedbackRecord, MemoryStore, RequestRecord
from tests.conftest import Gateway

pytestmark = pytest.mark.asyncio

HELLO = [{"role": "user", "content": "Say hello"}]


async def test_an_answered_request_is_logged_with_what_the_client_was_told(
    gateway: Gateway,
) -> None:
    r = await gateway.client.post(
        "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
    )
    body = r.json()
    [record] = await gateway.app.state.store.requests()
    assert record.request_id == body["id"] == r.headers["x-request-id"]
    assert (record.model, record.status, record.stream) == ("coe-auto", 200, False)
    assert record.experts == ["alpha"] and record.tried == ["alpha"]
    assert record.router == "cheapest"
    assert record.cost_usd == body["coe"]["cost_usd"]
    assert record.completion_tokens == body["usage"]["completion_tokens"]
    assert record.prompt is None and record.answer is None  # not stored unless asked for
    assert await gateway.app.state.store.get_request(body["id"]) is record


async def test_a_fallback_and_a_failure_are_logged(gateway: Gateway) -> None:
    gateway.network.down.add("alpha")
    ok = await gateway.client.post(
        "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
    )
    gateway.network.down.add("beta")
    failed = await gateway.client.post(
        "/v1/chat/completions", json={"model": "beta", "messages": HELLO}
    )
    assert (ok.status_code, failed.status_code) == (200, 503)
    first, second = await gateway.app.state.store.requests()
    assert first.tried == ["alpha", "beta"] and first.failed == ["alpha"] and first.fallback
    assert first.experts == ["beta"]
    assert second.status == 503 and second.tried == ["beta"] and second.experts == []
    assert second.error is not None and "beta" in second.error


async def test_a_stream_is_logged_when_it_ends_with_its_time_to_first_token(
    gateway: Gateway,
) -> None:
    r = await gateway.client.post(
        "/v1/chat/completions", json={"model": "alpha", "messages": HELLO, "stream": True}
    )
    assert r.status_code == 200
    [record] = await gateway.app.state.store.requests()
    assert record.stream and record.status == 200 and record.error is None
    assert record.experts == ["alpha"]
    assert record.ttft_ms is not None and 0 < record.ttft_ms <= record.latency_ms
    assert record.completion_tokens == 3


async def test_a_bad_request_is_logged_with_its_status(gateway: Gateway) -> None:
    r = await gateway.client.post("/v1/chat/completions", json={"model": "nope", "messages": HELLO})
    assert r.status_code == 404
    [record] = await gateway.app.state.store.requests()
    assert record.status == 404 and record.model == "nope"


async def test_memory_store_is_bounded_and_filters_by_time() -> None:
    store = MemoryStore(max_requests=3)
    for i in range(5):
        await store.log_request(
            RequestRecord(ts=float(i), request_id=f"r{i}", model="m", status=200, latency_ms=1.0)
        )
    assert [r.request_id for r in await store.requests()] == ["r2", "r3", "r4"]
    assert [r.request_id for r in await store.requests(since=3.0)] == ["r3", "r4"]
    assert [r.request_id for r in await store.requests(limit=1)] == ["r4"]
    assert await store.get_request("r0") is None  # evicted with its record
    await store.add_feedback(FeedbackRecord(ts=1.0, request_id="r4", score=0.5))
    assert [f.score for f in await store.feedback()] == [0.5]
    record = (await store.requests())[0]
    assert RequestRecord.from_json(record.as_json()) == record


async def test_a_composition_is_no_fallback_unless_an_expert_failed(gateway: Gateway) -> None:
    ask = {"model": "coe-compose", "messages": HELLO, "coe": {"k": 2, "strategy": "vote"}}
    assert (await gateway.client.post("/v1/chat/completions", json=ask)).status_code == 200
    gateway.network.down.add("beta")
    assert (await gateway.client.post("/v1/chat/completions", json=ask)).status_code == 200
    whole, partial = await gateway.app.state.store.requests()
    assert sorted(whole.tried) == ["alpha", "beta"] and not whole.failed
    assert not whole.fallback
    assert partial.failed == ["beta"] and partial.fallback
