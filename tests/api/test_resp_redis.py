"""`api.store.resp.PipelinedRedis` against a real Redis: the shared one (keys under a prefix of
the test's own) and a redis-server of the test's own, stopped and restarted."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis

from api.store import StoreUnavailable
from api.store.redis import RedisStore
from api.store.resp import PipelinedRedis, ReplyError, RespUnavailable, pack_many
from tests.api.conftest import OwnRedis
from tests.api.test_store_backends import charge, record

pytestmark = pytest.mark.integration


async def test_pipelined_commands_and_many_callers_get_their_own_replies(
    redis_url: str, redis_prefix: str
) -> None:
    client = PipelinedRedis.from_url(redis_url)
    try:
        name = f"{redis_prefix}n"
        replies = await client.execute(
            pack_many([("SET", name, "x"), ("INCR", name), ("GET", name)]), 3
        )
        assert replies[0] == b"OK" and replies[2] == b"x"
        assert isinstance(replies[1], ReplyError)  # an error in its command's place
        counters = [f"{redis_prefix}c{i % 7}" for i in range(300)]
        values = await asyncio.gather(*(client.call("INCR", c) for c in counters))
        for i in range(7):  # each caller saw its own counter's value, in order
            assert [v for c, v in zip(counters, values, strict=True) if c.endswith(f"c{i}")] == (
                list(range(1, len(counters[i::7]) + 1))
            )
        # the URL's database: redis-py on the same URL reads what this client wrote
        sync = redis.Redis.from_url(redis_url)
        assert sync.get(name) == b"x"
        sync.close()
    finally:
        await client.aclose()


async def test_redis_going_away_fails_in_flight_calls_and_its_return_is_picked_up(
    own_redis: OwnRedis,
) -> None:
    client = PipelinedRedis.from_url(own_redis.url, timeout_s=0.5)
    try:
        assert await client.call("PING") == b"PONG"
        blocked = asyncio.ensure_future(client.call("BLPOP", "never", 5))
        await asyncio.sleep(0.05)
        own_redis.stop()
        with pytest.raises(RespUnavailable):
            await blocked
        with pytest.raises(RespUnavailable, match="cannot connect"):
            await client.call("PING")
        own_redis.start()
        assert await client.call("PING") == b"PONG"  # connected again, no restart needed
    finally:
        await client.aclose()


async def test_a_password_is_sent_and_a_wrong_one_is_unavailable(own_redis: OwnRedis) -> None:
    admin = redis.Redis.from_url(own_redis.url)
    admin.config_set("requirepass", "s3cret")
    admin.close()
    port = own_redis.port
    good = PipelinedRedis.from_url(f"redis://:s3cret@127.0.0.1:{port}/2")
    bad = PipelinedRedis.from_url(f"redis://:wrong@127.0.0.1:{port}/2")
    try:
        assert await good.call("SET", "k", "v") == b"OK"
        check = redis.Redis.from_url(f"redis://:s3cret@127.0.0.1:{port}/2")
        assert check.get("k") == b"v"  # database 2 selected
        check.close()
        with pytest.raises(RespUnavailable):
            await bad.call("PING")
    finally:
        await good.aclose()
        await bad.aclose()


async def test_the_store_admits_and_logs_on_it_and_an_outage_is_store_unavailable(
    own_redis: OwnRedis,
) -> None:
    store = RedisStore.from_url(own_redis.url, timeout_s=0.3)
    try:
        assert store.fast is not None
        taken = charge(nano_usd=100)
        results = await asyncio.gather(*(store.admit(taken, 5, None, None) for _ in range(8)))
        assert results.count(None) == 5 and results.count("rpm") == 3
        await store.log_and_adjust([record(1)], [(taken, 0, -40)])
        assert [r.request_id for r in await store.requests()] == ["r1"]
        assert await store.spent_nano_usd("k1", taken.period) == 5 * 100 - 40
        own_redis.stop()
        with pytest.raises(StoreUnavailable):
            await store.admit(taken, None, None, None)
        with pytest.raises(StoreUnavailable):
            await store.log_and_adjust([record(2)], [])
        own_redis.start()  # empty, without the scripts: loaded again on NOSCRIPT
        for _ in range(3):  # as the fallback store's watcher does: ping until it answers
            with contextlib.suppress(StoreUnavailable):  # (redis-py's pooled connections
                await store.ping()  # are stale: the first call on each fails)
                break
        assert await store.admit(taken, None, None, None) is None
        await store.log_and_adjust([record(3)], [])
        assert [r.request_id for r in await store.requests()] == ["r3"]
    finally:
        await store.aclose()
