"""The chat endpoint against fake experts: answers, metadata, streaming, fallback."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import Gateway

pytestmark = pytest.mark.asyncio

HELLO = [{"role": "user", "content": "Say hello"}]


def sse_events(text: str) -> list[Any]:
    events = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def test_auto_routes_to_the_cheapest_expert_and_reports_why(gateway: Gateway) -> None:
    r = await gateway.client.post(
        "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "alpha says hi"
    assert body["model"] == "alpha"
    coe = body["coe"]
    assert coe["experts"] == ["alpha"]
    assert coe["tried"] == [{"expert": "alpha", "error": None}]
    assert coe["router"] == "cheapest"
    assert set(coe["scores"]) == {"alpha", "beta"}
    usage = body["usage"]
    assert coe["usage"]["prompt_tokens"] == usage["prompt_tokens"] == 2
    assert coe["usage"]["completion_tokens"] == usage["completion_tokens"] == 3
    assert coe["cost_usd"] == pytest.approx((2 * 1.0 + 3 * 2.0) / 1e6)
    assert coe["latency_ms"] > 0
    assert r.headers["x-coe-experts"] == "alpha"
    assert r.headers["x-coe-router"] == "cheapest"
    assert float(r.headers["x-coe-cost-usd"]) == pytest.approx(coe["cost_usd"])
    assert r.headers["x-request-id"] == body["id"]


async def test_expert_name_goes_straight_to_it_with_its_served_model_id(gateway: Gateway) -> None:
    r = await gateway.client.post("/v1/chat/completions", json={"model": "beta", "messages": HELLO})
    assert r.status_code == 200
    assert r.json()["coe"]["experts"] == ["beta"]
    assert r.json()["coe"]["router"] is None
    sent = gateway.fakes["beta"].requests[-1]
    assert sent["model"] == "org/beta-7b"
    assert "coe" not in sent
    assert sent["max_tokens"] == 512  # the gateway always bounds the answer


async def test_options_are_passed_through_and_coe_options_are_not(gateway: Gateway) -> None:
    payload = {
        "model": "coe-auto",
        "messages": HELLO,
        "temperature": 0,
        "seed": 7,
        "stop": ["\n"],
        "max_completion_tokens": 9,
        "coe": {"cost_weight": 0.5},
    }
    r = await gateway.client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200
    sent = gateway.fakes["alpha"].requests[-1]
    assert sent["seed"] == 7 and sent["stop"] == ["\n"] and sent["temperature"] == 0
    assert sent["max_tokens"] == 9 and "max_completion_tokens" not in sent
    assert "coe" not in sent


async def test_stream_passes_chunks_and_ends_with_metadata(gateway: Gateway) -> None:
    gateway.fakes["alpha"].enqueue("one two three")
    payload = {"model": "coe-auto", "messages": HELLO, "stream": True}
    r = await gateway.client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["x-coe-experts"] == "alpha"
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "one two three"
    assert len({c["id"] for c in chunks}) == 1
    final = chunks[-1]
    assert final["choices"] == [] and "usage" not in final  # not asked for
    assert final["coe"]["experts"] == ["alpha"]
    assert final["coe"]["usage"]["completion_tokens"] == 3
    assert final["coe"]["cost_usd"] > 0


async def test_stream_include_usage_is_honoured(gateway: Gateway) -> None:
    payload = {
        "model": "alpha",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = await gateway.client.post("/v1/chat/completions", json=payload)
    final = sse_events(r.text)[-2]
    assert final["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    # usage appears once, in the last chunk, as OpenAI does
    assert sum("usage" in e for e in sse_events(r.text)[:-1]) == 1


async def test_falls_back_when_the_chosen_expert_is_down(gateway: Gateway) -> None:
    gateway.network.down.add("alpha")
    r = await gateway.client.post(
        "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
    )
    assert r.status_code == 200
    coe = r.json()["coe"]
    assert coe["experts"] == ["beta"]
    assert [t["expert"] for t in coe["tried"]] == ["alpha", "beta"]
    assert "refused" in coe["tried"][0]["error"]
    assert r.headers["x-coe-tried"] == "alpha,beta"
    # alpha is now benched: the next request goes to beta first, without trying alpha
    r = await gateway.client.post(
        "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
    )
    assert [t["expert"] for t in r.json()["coe"]["tried"]] == ["beta"]


async def test_falls_back_on_5xx_but_not_on_4xx(gateway: Gateway) -> None:
    gateway.fakes["alpha"].enqueue_error(503, "overloaded")
    r = await gateway.client.post(
        "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
    )
    assert r.json()["coe"]["experts"] == ["beta"]

    gateway.fakes["beta"].enqueue_error(400, "context length exceeded")
    r = await gateway.client.post("/v1/chat/completions", json={"model": "beta", "messages": HELLO})
    assert r.status_code == 400
    assert "context length exceeded" in r.json()["error"]["message"]


async def test_stream_falls_back_before_the_first_byte(gateway: Gateway) -> None:
    gateway.fakes["alpha"].enqueue_error(500, "boom")
    payload = {"model": "coe-auto", "messages": HELLO, "stream": True}
    r = await gateway.client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 200
    final = sse_events(r.text)[-2]
    assert final["coe"]["experts"] == ["beta"]
    assert final["coe"]["tried"][0]["expert"] == "alpha"


async def test_no_expert_answering_is_a_503_naming_them(gateway: Gateway) -> None:
    gateway.network.down.update({"alpha", "beta"})
    for stream in (False, True):
        payload = {"model": "coe-auto", "messages": HELLO, "stream": stream}
        r = await gateway.client.post("/v1/chat/completions", json=payload)
        assert r.status_code == 503
        error = r.json()["error"]
        assert error["code"] == "no_expert_available"
        assert {t["expert"] for t in error["tried"]} == {"alpha", "beta"}


async def test_max_cost_excludes_dear_experts(gateway: Gateway) -> None:
    gateway.network.down.add("alpha")
    payload = {"model": "coe-auto", "messages": HELLO, "coe": {"max_cost_usd": 0.0008}}
    r = await gateway.client.post("/v1/chat/completions", json=payload)
    # beta's estimated cost (256 completion tokens at 6 USD/1M = 0.0015) exceeds the cap
    assert r.status_code == 503
    assert [t["expert"] for t in r.json()["error"]["tried"]] == ["alpha"]


async def test_client_disconnect_closes_the_upstream_stream(gateway: Gateway) -> None:
    from api.schemas import ChatCompletionRequest

    gateway.fakes["alpha"].enqueue("a b c d e f g h")
    chat = gateway.app.state.chat
    request = ChatCompletionRequest.model_validate(
        {"model": "alpha", "messages": HELLO, "stream": True}
    )
    response = await chat.stream(request)
    assert chat.pool.client.in_flight("alpha") == 1
    body = response.body_iterator
    first = await anext(body)
    assert b"chat.completion.chunk" in bytes(first)
    await body.aclose()  # what Starlette does when the client goes away
    assert chat.pool.client.in_flight("alpha") == 0


async def test_every_expert_timing_out_is_a_504(gateway: Gateway) -> None:
    gateway.network.silent.update({"alpha", "beta"})
    r = await gateway.client.post(
        "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
    )
    assert r.status_code == 504
    assert r.json()["error"]["code"] == "upstream_timeout"
    gateway.network.silent.discard("beta")  # one timed out, one answered: a fallback, not an error
    r = await gateway.client.post(
        "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
    )
    assert r.status_code == 200 and r.json()["coe"]["experts"] == ["beta"]
