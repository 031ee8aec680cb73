"""The store contract, run against both backends: in-process and the real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from api.store import ApiKey, Charge, FeedbackRecord, MemoryStore, RequestRecord, Store
from api.store.redis import RedisStore

pytestmark = pytest.mark.asyncio


@pytest.fixture(
    params=["memory", pytest.param("redis", marks=pytest.mark.integration)],
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield MemoryStore(max_requests=1000)
    else:  # the prefix fixture is synchronous: it can be asked for from here
        prefix = request.getfixturevalue("redis_prefix")
        redis_store = RedisStore.from_url(request.getfixturevalue("redis_url"), prefix=prefix)
        yield redis_store
        await redis_store.aclose()


def record(i: int, ts: float | None = None, **fields: object) -> RequestRecord:
    return RequestRecord(
        ts=time.time() if ts is None else ts,
        request_id=f"r{i}",
        model="coe-auto",
        status=200,
        latency_ms=1.5,
        **fields,  # type: ignore[arg-type]
    )


def key(name: str, digest: str, **limits: object) -> ApiKey:
    return ApiKey(id=digest[:12], name=name, hash=digest, prefix="coe-xx", created=time.time(),
                  **limits)  # type: ignore[arg-type]  # fmt: skip


def charge(key_id: str = "k1", tokens: int = 10, nano_usd: int = 100) -> Charge:
    return Charge(key_id, minute="1000", period="2026-11-23", period_ttl_s=60, tokens=tokens,
                  nano_usd=nano_usd)  # fmt: skip


async def test_the_request_log_keeps_order_fields_and_time_filter(store: Store) -> None:
    now = time.time()
    first = record(1, now - 100, experts=["alpha"], scores={"alpha": 0.5}, cost_usd=1e-6)
    await store.log_request(first)
    await store.log_request(record(2, now - 10, key_id="k1", cache_hit=True))
    await store.log_request(record(3, now - 50))  # a long request, logged after a later one
    assert [r.request_id for r in await store.requests()] == ["r1", "r2", "r3"]
    assert [r.request_id for r in await store.requests(since=now - 60)] == ["r2", "r3"]
    assert [r.request_id for r in await store.requests(limit=1)] == ["r3"]
    assert await store.get_request("r1") == first
    assert (await store.get_request("r2")).cache_hit  # type: ignore[union-attr]
    assert await store.get_request("nope") is None
    await store.add_feedback(FeedbackRecord(ts=now, request_id="r1", score=0.75, comment="ok"))
    [fb] = await store.feedback(since=now - 1)
    assert (fb.request_id, fb.score, fb.comment) == ("r1", 0.75, "ok")


async def test_keys_are_unique_by_name_found_by_hash_and_revoked(store: Store) -> None:
    assert await store.lookup_key("h1" * 32) == (False, None)
    await store.add_key(key("ci", "a" * 64, rpm=5))
    with pytest.raises(ValueError, match="already named 'ci'"):
        await store.add_key(key("ci", "b" * 64))
    exists, found = await store.lookup_key("a" * 64)
    assert exists and found is not None and found.name == "ci" and found.rpm == 5
    assert await store.lookup_key("c" * 64) == (True, None)
    revoked = await store.revoke_key("ci")
    assert revoked is not None and revoked.revoked is not None
    assert await store.revoke_key("ci") is None
    assert await store.lookup_key("a" * 64) == (False, None)
    await store.add_key(key("ci", "d" * 64))  # the name is free again
    listed = await store.keys()
    assert [(k.name, k.revoked is None) for k in listed] == [("ci", False), ("ci", True)]


async def test_limits_refuse_without_taking_anything(store: Store) -> None:
    for _ in range(3):
        assert await store.admit(charge(), rpm=3, tpm=None, budget_nano_usd=None) is None
    assert await store.admit(charge(), rpm=3, tpm=None, budget_nano_usd=None) == "rpm"
    assert await store.admit(charge("k2", tokens=80), None, 100, None) is None
    assert await store.admit(charge("k2", tokens=30), None, 100, None) == "tpm"
    await store.adjust(charge("k2"), tokens=-60, nano_usd=0)  # settled: used 20, not 80
    assert await store.admit(charge("k2", tokens=30), None, 100, None) is None
    assert await store.admit(charge("k3", tokens=500), None, 100, None) is None  # empty minute
    assert await store.admit(charge("k4", nano_usd=600), None, None, 1000) is None
    assert await store.admit(charge("k4", nano_usd=600), None, None, 1000) == "budget"
    assert await store.spent_nano_usd("k4", "2026-11-23") == 600
    await store.adjust(charge("k4"), tokens=0, nano_usd=-400)
    assert await store.spent_nano_usd("k4", "2026-11-23") == 200


async def test_concurrent_reservations_never_overrun_a_budget(store: Store) -> None:
    """100 requests at once against a budget for exactly 10: 10 get through."""
    results = await asyncio.gather(
        *(store.admit(charge("kb", nano_usd=1234), None, None, 12_340) for _ in range(100))
    )
    assert results.count(None) == 10 and results.count("budget") == 90
    assert await store.spent_nano_usd("kb", "2026-11-23") == 12_340


async def test_cache_entries_expire_and_index_newest_first(store: Store) -> None:
    await store.cache_put("e1", {"answer": {"x": 1}}, ttl_s=0.2)
    assert await store.cache_get("e1") == {"answer": {"x": 1}}
    assert await store.cache_get("e2") is None
    await asyncio.sleep(0.3)
    assert await store.cache_get("e1") is None
    for i in range(4):
        await store.cache_index("ns", f"k{i}", bytes([i, 0, 1]), ttl_s=10, max_entries=3)
    assert await store.cache_candidates("ns") == [
        ("k3", bytes([3, 0, 1])),
        ("k2", bytes([2, 0, 1])),
        ("k1", bytes([1, 0, 1])),
    ]
    assert await store.cache_candidates("other") == []


@pytest.mark.integration
async def test_redis_log_is_bounded(redis_url: str, redis_prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=redis_prefix, max_requests=10)
    try:
        for i in range(400):
            await store.log_request(record(i))
        length = await store.redis.xlen(store.k("requests"))
        assert 10 <= length < 400  # trimmed approximately (whole stream nodes)
        assert (await store.requests(limit=1))[0].request_id == "r399"
    finally:
        await store.aclose()


async def test_a_redis_url_that_is_not_one_fails_at_start_naming_the_setting() -> None:
    from pydantic import ValidationError

    from api.settings import Settings

    with pytest.raises(ValidationError, match="redis_url"):
        Settings(redis_url="localhost:6379", _env_file=None)  # type: ignore[call-arg]
    assert Settings(redis_url="", _env_file=None).redis_url is None  # type: ignore[call-arg]


async def test_log_requests_writes_a_batch_in_order(store: Store) -> None:
    await store.log_requests([record(i) for i in range(5)])
    assert [r.request_id for r in await store.requests()] == [f"r{i}" for i in range(5)]
    assert (await store.get_request("r3")) is not None


async def test_a_batch_logs_its_records_and_settles_its_adjustments(store: Store) -> None:
    taken = charge(tokens=10, nano_usd=100)
    assert await store.admit(taken, None, None, None) is None
    await store.log_and_adjust([record(0), record(1)], [(taken, -4, -30), (taken, 0, -20)])
    assert [r.request_id for r in await store.requests()] == ["r0", "r1"]
    assert await store.spent_nano_usd("k1", taken.period) == 50


async def test_a_batch_writes_its_cache_entries_too(store: Store) -> None:
    await store.log_and_adjust([record(0)], [], {"a": ({"expert": "x"}, 60), "b": ({"n": 1}, 60)})
    assert [r.request_id for r in await store.requests()] == ["r0"]
    assert await store.cache_get("a") == {"expert": "x"}
    assert await store.cache_get("b") == {"n": 1}


@pytest.mark.integration
async def test_a_batch_logs_every_record_after_redis_lost_its_scripts(
    redis_url: str, redis_prefix: str
) -> None:
    """A restarted Redis has no scripts: the batch's records are logged all the same, once."""
    store = RedisStore.from_url(redis_url, prefix=redis_prefix)
    try:
        await store.log_request(record(0))  # the script is loaded
        await store.redis.script_flush()
        taken = charge(nano_usd=100)
        await store.admit(taken, None, None, None)
        await store.log_and_adjust([record(1), record(2)], [(taken, 0, -40)])
        assert [r.request_id for r in await store.requests()] == ["r0", "r1", "r2"]
        assert await store.spent_nano_usd("k1", taken.period) == 60
    finally:
        await store.aclose()


@pytest.mark.integration
async def test_a_replica_caches_its_key_but_its_limits_see_a_revocation_at_once(
    redis_url: str, redis_prefix: str
) -> None:
    from api.errors import Unauthorized

    here = RedisStore.from_url(redis_url, prefix=redis_prefix, timeout_s=2.0)
    there = RedisStore.from_url(redis_url, prefix=redis_prefix, timeout_s=2.0)
    try:
        await here.add_key(key("team", "a" * 64, rpm=100))
        assert (await here.lookup_key("a" * 64))[1] is not None
        assert await here.admit(charge("a" * 12), 100, None, None) is None
        await there.revoke_key("team")  # another replica (or `coe keys revoke`)
        assert (await here.lookup_key("a" * 64))[1] is not None  # cached, for key_cache_s
        with pytest.raises(Unauthorized, match="revoked"):
            await here.admit(charge("a" * 12), 100, None, None)
        assert (await here.lookup_key("a" * 64))[1] is None  # and the cache is dropped
        await here.add_key(key("solo", "b" * 64))
        assert (await here.lookup_key("b" * 64))[1] is not None
        await here.revoke_key("solo")  # this replica's own revocation: seen at once
        assert (await here.lookup_key("b" * 64))[1] is None
    finally:
        await here.aclose()
        await there.aclose()
