"""Per-key limits at the gateway: RPM and TPM (429 + retry-after), and USD budgets reserved
before a request and settled to its real cost after, on both store backends."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from api.keys import new_key
from api.limits import nano_usd, period_window
from api.schemas import ChatCompletionRequest
from tests.api.conftest import GatewayFactory, wait_for
from tests.conftest import Gateway

HELLO = [{"role": "user", "content": "Say hello"}]
CHAT = {"model": "alpha", "messages": HELLO}


async def with_key(gw: Gateway, **limits: Any) -> tuple[dict[str, str], str]:
    secret, key = new_key("limited", **limits)
    await gw.app.state.store.add_key(key)
    return {"authorization": f"Bearer {secret}"}, key.id


async def test_requests_per_minute(gateway: Gateway) -> None:
    headers, key_id = await with_key(gateway, rpm=2)
    codes = [
        (await gateway.client.post("/v1/chat/completions", json=CHAT, headers=headers))
        for _ in range(3)
    ]
    assert [r.status_code for r in codes] == [200, 200, 429]
    refused = codes[2]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert "2 requests per minute" in error["message"]
    logged = await gateway.app.state.store.requests()
    assert [(r.status, r.key_id) for r in logged] == [(200, key_id)] * 2 + [(429, key_id)]


async def test_tokens_per_minute_settle_to_what_was_used(gateway: Gateway) -> None:
    limiter = gateway.app.state.guard.limiter
    tokens, _ = limiter.estimate(ChatCompletionRequest.model_validate(CHAT))
    headers, _ = await with_key(gateway, tpm=tokens + 10)
    # The first takes its estimate (prompt + 256 assumed), then settles to the 5 tokens used,
    # which leaves room for the second; without settling, the second would be refused.
    first = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=headers)
    second = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert (first.status_code, second.status_code) == (200, 200)
    big = {**CHAT, "messages": [{"role": "user", "content": "word " * 1000}]}
    refused = await gateway.client.post("/v1/chat/completions", json=big, headers=headers)
    assert refused.status_code == 429 and "tokens per minute" in refused.json()["error"]["message"]


@pytest.mark.parametrize(
    "backend", ["memory", pytest.param("redis", marks=pytest.mark.integration)]
)
async def test_100_concurrent_requests_against_a_budget_for_10(
    make_gateway: GatewayFactory, backend: str, request: pytest.FixtureRequest
) -> None:
    settings: dict[str, Any] = {}
    if backend == "redis":
        settings = {
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
            # This test is about atomicity, not timeouts: 100 connections opened at once on a
            # busy CI machine can take longer than the default 0.5 s, and a timed-out call is
            # (by design) admitted by the in-process fallback, which would count twice.
            "redis_timeout_s": 10.0,
        }
    gate = asyncio.Event()
    async with make_gateway(gate=gate, **settings) as gw:
        limiter = gw.app.state.guard.limiter
        _, estimate = limiter.estimate(ChatCompletionRequest.model_validate(CHAT))
        budget = 10 * estimate
        headers, key_id = await with_key(gw, budget_usd=budget, period="month")

        async def post() -> Any:
            return await gw.client.post("/v1/chat/completions", json=CHAT, headers=headers)

        calls = [asyncio.create_task(post()) for _ in range(100)]
        # Every call is admitted or refused before any expert answers (the gate holds them).
        pending: set[asyncio.Task[Any]] = set(calls)
        while len(pending) > 10:  # the refused answer at once; the admitted wait at the gate
            done, pending = await asyncio.wait(
                pending, timeout=5, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                break  # more than 10 are waiting at the gate: the assertion below says so
        gate.set()
        responses = await asyncio.gather(*calls)
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 10 and codes.count(429) == 90
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert int(refused.headers["retry-after"]) > 0
        real = sum(r.json()["coe"]["cost_usd"] for r in responses if r.status_code == 200)
        assert real < budget  # each answer cost less than its estimate ...
        period = period_window("month", time.time())[0]
        spent = await gw.app.state.store.spent_nano_usd(key_id, period)
        assert abs(spent - nano_usd(real)) <= 10  # ... and the budget was charged what it cost


@pytest.mark.integration
async def test_a_stream_is_logged_with_its_key_and_settled_on_redis(
    make_gateway: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    async with make_gateway(redis_url=redis_url, redis_prefix=redis_prefix) as gw:
        headers, key_id = await with_key(gw, budget_usd=1.0)
        gw.fakes["alpha"].enqueue("a b c d e f g h")
        body = {**CHAT, "stream": True}
        async with gw.client.stream(
            "POST", "/v1/chat/completions", json=body, headers=headers
        ) as response:
            async for _ in response.aiter_bytes():
                break  # stop reading after the first chunk

        async def logged() -> bool:
            return bool(await gw.app.state.store.requests())

        await wait_for(logged)
        [record] = await gw.app.state.store.requests()
        assert record.key_id == key_id and record.stream
        period = period_window("day", time.time())[0]
        # the reservation was settled: what stays charged is what the record says it cost
        spent = await gw.app.state.store.spent_nano_usd(key_id, period)
        assert spent == nano_usd(record.cost_usd)


def test_a_composition_reserves_every_call_it_may_make(gateway: Gateway) -> None:
    limiter = gateway.app.state.guard.limiter

    def estimate(**coe: Any) -> tuple[int, float]:
        body = {"model": "coe-compose", "messages": HELLO, "coe": coe}
        return limiter.estimate(ChatCompletionRequest.model_validate(body))

    auto_tokens, auto_usd = limiter.estimate(
        ChatCompletionRequest.model_validate({"model": "coe-auto", "messages": HELLO})
    )
    # 2 proposers + the aggregator, whose prompt also holds the answers it reads
    tokens, usd = estimate(k=2, strategy="aggregate")
    assert tokens == 3 * auto_tokens and usd > 3 * auto_usd
    assert 2 * auto_usd < estimate(k=2, strategy="vote")[1] < usd  # no closing call
    assert estimate(k=2, strategy="moa", layers=2)[1] > 5 * auto_usd
    assert estimate(k=2, max_cost_usd=auto_usd)[1] == pytest.approx(auto_usd)  # never past it


def _period_window_reference(period: str, now: float) -> tuple[str, int, float]:
    """`period_window` as it was computed per request, before it was remembered per day."""
    import calendar

    t = time.gmtime(now)
    if period == "month":
        days = calendar.monthrange(t.tm_year, t.tm_mon)[1]
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        return time.strftime("%Y-%m", t), 62 * 86_400, start + days * 86_400 - now
    start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    return time.strftime("%Y-%m-%d", t), 2 * 86_400, start + 86_400 - now


def test_the_period_window_remembered_per_day_is_the_one_computed_per_request() -> None:
    import random

    rng = random.Random(0)
    days = (0, 19_722, 20_454, 20_485)  # 1970-01-01, 2023-12-31, 2026-01-01, 2026-02-01
    boundaries = [86_400 * d + offset for d in days for offset in (-1e-6, 0, 1e-6)]
    for now in [*boundaries, *(rng.uniform(0, 4e9) for _ in range(20_000))]:
        for period in ("day", "month"):
            assert period_window(period, now) == _period_window_reference(period, now)
