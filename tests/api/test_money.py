"""Money holds to the cent: what a stream streamed is paid for however it ends, every call is
reserved at the most it can cost, and `max_cost_usd` bounds what an expert may write."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from api.app import create_app
from api.limits import nano_usd, period_window
from api.schemas import ChatCompletionRequest
from api.settings import Settings
from experts.errors import PoolConfigError
from experts.pool import load_pool
from experts.testing import FakeExpert, FakeNetwork
from tests.api.conftest import GatewayFactory, wait_for
from tests.api.test_limits import with_key
from tests.conftest import POOL, Gateway, write_pool

HELLO = [{"role": "user", "content": "Say hello"}]
LONG = " ".join(f"w{i}" for i in range(600))  # longer than any limit below: cut at max_tokens


async def _record(gw: Gateway) -> Any:
    async def logged() -> bool:
        return bool(await gw.app.state.store.requests())

    await wait_for(logged)
    [record] = await gw.app.state.store.requests()
    return record


async def test_a_stream_the_client_leaves_is_logged_499_and_paid_for(gateway: Gateway) -> None:
    _, key_id = await with_key(gateway, budget_usd=1.0)
    gateway.fakes["alpha"].enqueue(LONG)
    request = ChatCompletionRequest.model_validate(
        {"model": "alpha", "messages": HELLO, "stream": True}
    )
    keys = await gateway.app.state.store.keys()
    key = next(k for k in keys if k.id == key_id)
    response = await gateway.app.state.guard.stream(request, key)
    body = response.body_iterator
    for _ in range(4):  # the client reads a few chunks and goes away (Starlette closes the body)
        await anext(body)  # type: ignore[call-overload]
    await body.aclose()  # type: ignore[attr-defined]
    record = await _record(gateway)
    assert record.status == 499
    assert record.completion_tokens >= 3 and record.prompt_tokens > 0
    assert record.cost_usd > 0
    spent = await gateway.app.state.store.spent_nano_usd(
        key_id, period_window("day", time.time())[0]
    )
    assert spent == nano_usd(record.cost_usd) > 0
    metrics = (await gateway.client.get("/metrics")).text
    assert 'coe_cost_usd_total{expert="alpha"}' in metrics
    assert 'coe_cost_usd_total{expert="alpha"} 0.0' not in metrics


def _failing_expert() -> Starlette:
    """Streams three words, then an error event: an expert that breaks mid-answer."""

    async def chat(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            for word in ("one", " two", " three"):
                chunk = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "alpha",
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            yield b'data: {"error": {"message": "out of memory"}}\n\n'

        return StreamingResponse(events(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


async def test_a_stream_the_expert_breaks_is_paid_for_what_it_sent(gateway: Gateway) -> None:
    gateway.network._transports["alpha"] = httpx.ASGITransport(app=_failing_expert())
    body = {"model": "alpha", "messages": HELLO, "stream": True}
    response = await gateway.client.post("/v1/chat/completions", json=body)
    assert "the expert failed mid-answer" in response.text
    record = await _record(gateway)
    assert record.error and record.completion_tokens == 3 and record.cost_usd > 0


@pytest.mark.parametrize(
    "backend", ["memory", pytest.param("redis", marks=pytest.mark.integration)]
)
async def test_100_concurrent_full_length_answers_never_overrun_a_budget_for_10(
    make_gateway: GatewayFactory, backend: str, request: pytest.FixtureRequest
) -> None:
    settings: dict[str, Any] = {}
    if backend == "redis":
        settings = {
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
            # about atomicity, not timeouts: a connect slower than the default on a busy
            # machine would (by design) let the in-process fallback admit
            "redis_connect_timeout_s": 10.0,
        }
    gate = asyncio.Event()
    async with make_gateway(gate=gate, **settings) as gw:
        gw.fakes["alpha"].default = LONG  # every answer runs to max_tokens (the default 512)
        alpha = gw.app.state.routing.experts["alpha"]
        one = alpha.cost_usd(2, 512)  # the fake counts the prompt's 2 words
        budget = 10 * one
        headers, key_id = await with_key(gw, budget_usd=budget, period="month")
        chat = {"model": "alpha", "messages": HELLO}

        async def post() -> httpx.Response:
            return await gw.client.post("/v1/chat/completions", json=chat, headers=headers)

        calls = [asyncio.create_task(post()) for _ in range(100)]
        await asyncio.sleep(0.5)  # every call admitted or refused while the gate holds them
        gate.set()
        responses = await asyncio.gather(*calls)
        answered = [r for r in responses if r.status_code == 200]
        assert gw.app.state.store.status()["status"] == "ok"
        assert 5 <= len(answered) <= 10
        assert all(r.json()["coe"]["cost_usd"] == pytest.approx(one) for r in answered)
        assert sum(r.json()["coe"]["cost_usd"] for r in answered) <= budget
        spent = await gw.app.state.store.spent_nano_usd(
            key_id, period_window("month", time.time())[0]
        )
        assert spent <= nano_usd(budget)


async def test_max_cost_usd_cuts_max_tokens_and_the_context_bounds_it(gateway: Gateway) -> None:
    alpha = gateway.fakes["alpha"]
    alpha.default = LONG
    cap = 0.0002  # alpha: $2 per 1M output tokens, so at most ~100 tokens fit
    body = {"model": "alpha", "messages": HELLO, "coe": {"max_cost_usd": cap}}
    response = await gateway.client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert alpha.requests[-1]["max_tokens"] < 100
    assert response.json()["coe"]["cost_usd"] <= cap
    huge = {"model": "alpha", "messages": HELLO, "max_tokens": 10**9}
    assert (await gateway.client.post("/v1/chat/completions", json=huge)).status_code == 200
    assert alpha.requests[-1]["max_tokens"] == 4096  # alpha's context length


def test_the_reservation_is_the_most_a_call_can_cost(gateway: Gateway) -> None:
    limiter = gateway.app.state.guard.limiter
    beta = gateway.app.state.routing.experts["beta"]
    _, usd = limiter.estimate(
        ChatCompletionRequest.model_validate({"model": "coe-auto", "messages": HELLO})
    )
    assert usd >= beta.cost_usd(len("Say hello"), 512)  # the dearest expert, at max_tokens


async def test_a_pools_default_max_tokens_is_sent_and_reserved(tmp_path: Path) -> None:
    pool: dict[str, Any] = json.loads(json.dumps(POOL))
    pool["experts"][1] |= {"default_max_tokens": 64}  # beta
    fakes = {"alpha": FakeExpert("alpha", "alpha hi"), "beta": FakeExpert("beta", "beta hi")}
    settings = Settings(
        pool=write_pool(tmp_path / "pool.yaml", pool),
        work_dir=tmp_path / "work",
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings, transport=FakeNetwork(fakes))
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
        async with client:
            for model, sent, expected in (
                ("beta", None, 64),
                ("beta", 10, 10),
                ("alpha", None, 512),
            ):
                body: dict[str, Any] = {"model": model, "messages": HELLO}
                if sent is not None:
                    body["max_tokens"] = sent
                assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
                assert fakes[model].requests[-1]["max_tokens"] == expected
        beta = app.state.routing.experts["beta"]
        request = ChatCompletionRequest.model_validate({"model": "beta", "messages": HELLO})
        _, usd = app.state.guard.limiter.estimate(request)
        assert usd == pytest.approx(beta.cost_usd(len("Say hello") + 16, 64), rel=0.2)
        assert usd < beta.cost_usd(len("Say hello"), 512)


def test_a_default_max_tokens_above_the_context_fails_at_start(tmp_path: Path) -> None:
    pool: dict[str, Any] = json.loads(json.dumps(POOL))
    pool["experts"][0] |= {"default_max_tokens": 5000, "context_length": 4096}
    with pytest.raises(PoolConfigError, match="default_max_tokens"):
        load_pool(write_pool(tmp_path / "pool.yaml", pool))
