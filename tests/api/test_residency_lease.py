"""The residency lease on the real Redis (DB 7, a prefix per test): one holder at a time,
renewal, expiry, and the state, wants and in-flight reports it carries between replicas."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from api.store.residency import RedisResidencyLease, replica_id

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
    await lease.publish({"a": True, "b": False})
    assert await lease.published() == {"a": True, "b": False}
    await lease.want("b")
    await lease.want("b")
    assert await lease.take_wanted() == {"b"} and await lease.take_wanted() == set()
    assert await lease.busy_elsewhere("x") == {}, "no other replica reports"
    await lease.report_busy("y", {"a": 2, "b": 0}, ttl_s=0.3)
    await lease.report_busy("x", {"a": 5}, ttl_s=5)
    assert await lease.busy_elsewhere("x") == {"a": 2, "b": 0}
    await asyncio.sleep(0.4)  # y's report is stale: y is gone
    assert await lease.busy_elsewhere("x") == {}
