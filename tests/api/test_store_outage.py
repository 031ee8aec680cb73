"""Redis unreachable at start or going away mid-run: the gateway serves on, and goes back.

These tests start and stop a redis-server of their own on a port in issue 7's range.
"""

from __future__ import annotations

import logging

import pytest

from api.store import MemoryStore, StoreUnavailable
from api.store.fallback import FallbackStore
from api.store.redis import RedisStore
from tests.api.conftest import GatewayFactory, OwnRedis, wait_for
from tests.api.test_store_backends import record

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
        r = await gw.client.post(
            "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
        )
        assert r.status_code == 200
        ready = (await gw.client.get("/ready")).json()
        assert ready["store"]["status"] == "degraded"
        assert ready["store"]["backend"] == "memory"
        [logged] = await gw.app.state.store.requests()
        assert logged.request_id == r.json()["id"]

        own_redis.start()

        async def back() -> bool:
            ready = (await gw.client.get("/ready")).json()
            return bool(ready["store"]["status"] == "ok")

        await wait_for(back)
        redis_store = gw.app.state.store.primary
        assert [x.request_id for x in await redis_store.requests()] == [r.json()["id"]]
