"""The residency lease on the real Redis (DB 7, a prefix per test): one holder at a time,
renewal, expiry, and the state, wants and calls in flight it carries between replicas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import cast

import httpx
import pytest

from api.store.residency import RedisResidencyLease, replica_id
from experts.engines.base import Engine
from experts.residency import ResidencyManager

pytestmark = pytest.mark.integration


@pytest.fixture
async def lease() -> AsyncIterator[RedisResidencyLease]:
    prefix = f"coe:test-lease-{uuid.uuid4().hex[:8]}:"
    lease = RedisResidencyLease.from_url("redis://127.0.0.1:6379/7", prefix, timeout_s=2)
    try:
        yield lease
    finally:
        keys = [k async for k in lease.redis.scan_iter(match=f"{prefix}*")]
        if keys:
            await lease.redis.delete(*keys)
        await lease.aclose()


async def test_one_holder_at_a_time_until_release_or_expiry(lease: RedisResidencyLease) -> None:
    a, b = replica_id(), replica_id()
    assert a != b
    assert await lease.acquire(a, 5) and not await lease.acquire(b, 5)
    assert await lease.acquire(a, 0.3), "the holder renews"
    await lease.release(b)  # not b's to release
    assert await lease.holder() == a
    await asyncio.sleep(0.4)  # a stopped renewing: the lease expires
    assert await lease.acquire(b, 5) and await lease.holder() == b
    await lease.release(b)
    assert await lease.holder() is None and await lease.acquire(a, 5)


async def test_state_wants_and_calls_in_flight(lease: RedisResidencyLease) -> None:
    assert await lease.published() is None
    assert not await lease.enter("a", "y"), "nothing published: no call may start"
    await lease.publish({"a": True, "b": False})
    assert await lease.published() == {"a": True, "b": False}
    await lease.want("b", "y", ttl_s=0.3)
    await lease.want("b", "z", ttl_s=5)
    assert await lease.wanted() == {"b"}
    await lease.unwant("b", "z")
    assert await lease.wanted() == {"b"}, "y still waits"
    await asyncio.sleep(0.4)  # y's want expired: y is gone or was served
    assert await lease.wanted() == set()
    await lease.alive("y", ttl_s=5)
    assert await lease.enter("a", "y") and await lease.enter("a", "y")
    assert not await lease.enter("b", "y"), "b is published asleep: the call must not start"
    assert await lease.calls_elsewhere("a", "x") == 2
    assert await lease.calls_elsewhere("a", "y") == 0, "a replica's own calls are not elsewhere"
    await lease.publish({"a": False, "b": True})  # the holder starts draining a
    assert not await lease.enter("a", "z")
    await lease.leave("a", "y")
    assert await lease.calls_elsewhere("a", "x") == 1
    await lease.alive("y", ttl_s=-1)  # y died with a call in flight: it no longer counts
    assert await lease.calls_elsewhere("a", "x") == 0


class _Engine:
    """What `ResidencyManager` reads of an engine when it follows (it never calls it then)."""

    def __init__(self, asleep: bool) -> None:
        self.asleep = asleep
        self.evictable = True


async def test_a_follower_asks_until_served_and_enters_calls_only_while_awake(
    lease: RedisResidencyLease,
) -> None:
    holder, follower = replica_id(), replica_id()
    assert await lease.acquire(holder, 5)
    engines = {"a": _Engine(asleep=False), "b": _Engine(asleep=True)}
    http = httpx.AsyncClient()  # never used: a follower does not call its engines
    manager = ResidencyManager(cast(dict[str, Engine], engines), http, 1)
    manager.share(lease, follower, ttl_s=5)
    manager.every_s = 0.05  # its want lives 0.2 s unless renewed
    await lease.publish({"a": True, "b": False})
    waking = asyncio.create_task(manager.make_resident("b"))
    for _ in range(200):
        if "b" in await lease.wanted():
            break
        await asyncio.sleep(0.01)
    await lease.publish({"a": False, "b": True})  # a wake too short for the follower to see
    await lease.publish({"a": True, "b": False})
    await asyncio.sleep(0.5)
    assert "b" in await lease.wanted(), "the follower asks again while it waits"
    assert not waking.done()
    await lease.publish({"a": False, "b": True})
    await asyncio.wait_for(waking, 2)
    assert not engines["b"].asleep and engines["a"].asleep
    assert await lease.wanted() == set(), "served: the want is withdrawn"

    await lease.alive(follower, ttl_s=5)  # what its coordination round does
    assert await manager.claim("b") and await lease.calls_elsewhere("b", holder) == 1
    await lease.publish({"a": False, "b": False})  # the holder starts draining b
    assert not await manager.claim("b"), "published asleep: no new call may start"
    assert engines["b"].asleep, "the follower adopts it as asleep and waits again"
    manager.unclaim("b")
    await asyncio.sleep(0.1)
    assert await lease.calls_elsewhere("b", holder) == 0
    await http.aclose()
