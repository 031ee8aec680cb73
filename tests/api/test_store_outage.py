"""Redis unreachable at start or going away mid-run: the gateway serves on, and goes back.

These tests start and stop a redis-server of their own on a port in issue 7's range.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from api.app import create_app
from api.keys import new_key
from api.schemas import ChatCompletionRequest
from api.settings import Settings
from api.store import Charge, MemoryStore, StoreUnavailable
from api.store.fallback import FallbackStore
from api.store.redis import RedisStore
from tests.api.conftest import GatewayFactory, OwnRedis, _free_port, wait_for
from tests.api.test_store_backends import record
from tests.conftest import write_pool

pytestmark = [pytest.mark.asyncio, pytest.mark.integration]

HELLO = [{"role": "user", "content": "Say hello"}]


async def test_redis_going_away_and_coming_back(
    own_redis: OwnRedis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_store = RedisStore.from_url(own_redis.url, timeout_s=0.3)
    store = FallbackStore(redis_store, MemoryStore(), retry_s=0.1)
    await store.start()
    try:
        assert not store.degraded and store.status()["status"] == "ok"
        await store.log_request(record(1))
        assert [r.request_id for r in await redis_store.requests()] == ["r1"]

        own_redis.stop()
        with caplog.at_level(logging.WARNING, logger="coe.store"):
            for i in range(2, 6):
                await store.log_request(record(i))  # never raises
        assert store.degraded and store.status()["status"] == "degraded"
        assert "redis" in store.status()["reason"]
        outage_warnings = [r for r in caplog.records if "serving from in-process" in r.message]
        assert len(outage_warnings) == 1  # once per outage, not once per request
        assert [r.request_id for r in await store.requests()] == ["r2", "r3", "r4", "r5"]
        with pytest.raises(StoreUnavailable):
            await redis_store.ping()

        own_redis.start()  # a fresh, empty Redis (no persistence)

        async def back() -> bool:
            return not store.degraded

        await wait_for(back)
        # what was logged meanwhile moved to Redis; new records go there too
        await store.log_request(record(6))
        ids = [r.request_id for r in await redis_store.requests()]
        assert ids == ["r2", "r3", "r4", "r5", "r6"]
        assert await store.local.requests() == []
        assert store.outages == 1
    finally:
        await store.aclose()


async def test_gateway_serves_with_redis_down_from_the_start(
    make_gateway: GatewayFactory, own_redis: OwnRedis
) -> None:
    own_redis.stop()  # the URL names a port where nothing listens
    async with make_gateway(redis_url=own_redis.url, redis_retry_s=0.1) as gw:
        chat = {"model": "coe-auto", "messages": HELLO}
        # Whether keys exist is unknown (no Redis, no mirror): fail closed, never open.
        refused = await gw.client.post("/v1/chat/completions", json=chat)
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["error"]["code"] == "auth_unavailable"
        ready = (await gw.client.get("/ready")).json()
        assert ready["store"]["status"] == "degraded"
        assert ready["store"]["backend"] == "memory"
        # what the gateway does serve meanwhile (outside /v1) is logged in memory ...
        await gw.app.state.store.log_request(record(1))

        own_redis.start()

        async def back() -> bool:
            ready = (await gw.client.get("/ready")).json()
            return bool(ready["store"]["status"] == "ok")

        await wait_for(back)
        r = await gw.client.post("/v1/chat/completions", json=chat)
        assert r.status_code == 200  # keys known now: an open gateway, as Redis says
        redis_store = gw.app.state.store.primary
        # ... and moved to Redis when it is back; the request's own record follows its answer
        # (the log flusher writes after the answer has gone out), so wait for the next flush
        wanted = ["r1", r.json()["id"]]

        async def moved() -> bool:
            return [x.request_id for x in await redis_store.requests()] == wanted

        await wait_for(moved, timeout_s=5)


async def _true(value: bool) -> bool:
    return value


def _stalling_expert() -> Starlette:
    """An OpenAI-compatible server whose stream sends one chunk and then says nothing."""

    async def chat(request: Request) -> StreamingResponse:
        async def events() -> AsyncIterator[bytes]:
            chunk = {
                "id": "x",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "slow",
                "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(60)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": "slow", "object": "model"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/models", models)])  # fmt: skip


async def test_a_stream_cancelled_while_the_expert_is_silent_is_still_logged_on_redis(
    redis_url: str, redis_prefix: str, tmp_path: Path
) -> None:
    """What a client that goes away mid-answer does to the stream: Starlette cancels the task
    group that relays it while the relay waits on the expert. The request must still reach the
    Redis log (as 499) and release its slot at the expert."""
    port = _free_port()
    expert = uvicorn.Server(
        uvicorn.Config(_stalling_expert(), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(expert.serve())
    await wait_for(lambda: _true(expert.started))
    pool = {"experts": [{"name": "slow", "engine": "openai", "base_url":
                         f"http://127.0.0.1:{port}/v1"}]}  # fmt: skip
    settings = Settings(
        pool=write_pool(tmp_path / "pool.yaml", pool),
        work_dir=tmp_path / "work",
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            request = ChatCompletionRequest.model_validate(
                {"model": "slow", "messages": HELLO, "stream": True}
            )
            response = await app.state.chat.stream(request)
            body = response.body_iterator

            async def relay() -> None:
                async for _ in body:
                    pass

            async with anyio.create_task_group() as group:
                group.start_soon(relay)
                await asyncio.sleep(0.3)  # the first chunk is relayed; now it waits
                group.cancel_scope.cancel()

            async def logged() -> bool:
                return bool(await app.state.store.primary.requests())

            await wait_for(logged, timeout_s=5)
            [record] = await app.state.store.primary.requests()
            assert record.status == 499 and "went away" in (record.error or "")
            assert app.state.chat.pool.client.in_flight("slow") == 0
    finally:
        expert.should_exit = expert.force_exit = True
        await serving


async def test_keys_hold_when_the_gateway_restarts_while_redis_is_down(
    make_gateway: GatewayFactory, own_redis: OwnRedis
) -> None:
    secret, key = new_key("ci")
    async with make_gateway(redis_url=own_redis.url, redis_retry_s=0.1) as gw:
        await gw.app.state.store.add_key(key)
        await gw.app.state.store._sync_keys()  # what the watcher does every few seconds
    own_redis.stop()
    async with make_gateway(redis_url=own_redis.url, redis_retry_s=0.1) as gw:
        assert gw.app.state.store.degraded
        chat = {"model": "alpha", "messages": HELLO}
        refused = await gw.client.post("/v1/chat/completions", json=chat)
        assert refused.status_code == 401  # not open: the mirrored keys stand in
        headers = {"authorization": f"Bearer {secret}"}
        ok = await gw.client.post("/v1/chat/completions", json=chat, headers=headers)
        assert ok.status_code == 200


async def test_spend_counted_during_an_outage_is_written_back(own_redis: OwnRedis) -> None:
    redis_store = RedisStore.from_url(own_redis.url, timeout_s=0.3)
    store = FallbackStore(redis_store, MemoryStore(), retry_s=0.1)
    await store.start()
    try:
        taken = Charge("k1", minute="1000", period="2026-11-23", period_ttl_s=600, tokens=10,
                       nano_usd=700)  # fmt: skip
        assert await store.admit(taken, None, None, 10_000) is None  # on Redis
        own_redis.stop()
        assert await store.admit(taken, None, None, 10_000) is None  # in memory
        await store.adjust(taken, -5, -200)  # settled in memory too
        assert store.degraded
        own_redis.start()  # a fresh, empty Redis: only the outage's spend can come back

        async def back() -> bool:
            return not store.degraded

        await wait_for(back)
        assert await redis_store.spent_nano_usd("k1", "2026-11-23") == 500
        ttl = await redis_store.redis.ttl(redis_store.k("usd:k1:2026-11-23"))
        assert 0 < ttl <= 600
    finally:
        await store.aclose()


@pytest.mark.integration
async def test_a_burst_of_calls_queues_for_connections_instead_of_failing(
    redis_url: str, redis_prefix: str
) -> None:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix, timeout_s=5.0, max_connections=8)
    try:
        taken = Charge("kb", minute="1000", period="2026-11-23", period_ttl_s=60, tokens=1,
                       nano_usd=1)  # fmt: skip
        results = await asyncio.gather(
            *(store.admit(taken, None, None, None) for _ in range(400)), return_exceptions=True
        )
        assert results == [None] * 400
        assert await store.spent_nano_usd("kb", "2026-11-23") == 400
    finally:
        await store.aclose()


async def test_a_key_created_since_the_last_sync_keeps_the_gateway_closed(
    own_redis: OwnRedis,
) -> None:
    store = FallbackStore(RedisStore.from_url(own_redis.url, timeout_s=0.3), MemoryStore())
    await store.start()  # no keys yet: the mirror in memory is empty
    try:
        _, key = new_key("late")
        await store.primary.add_key(key)  # created elsewhere, not synced here
        assert (await store.lookup_key(None))[0]  # Redis says keys exist
        own_redis.stop()
        with pytest.raises(StoreUnavailable):  # memory alone would say "open"
            await store.lookup_key(None)
    finally:
        await store.aclose()
