"""The residency lease on Redis: one gateway replica at a time drives sleep and wake.

Implements `experts.residency.ResidencyLease` with four keys under the store's prefix:

    residency:lease   the holder's id, with a TTL (SET NX PX; renewed by the holder only)
    residency:state   JSON {expert: awake} as the holder last published it
    residency:want    a set of experts that followers are waiting for
    residency:busy    a hash {replica: JSON {"until": t, "in_flight": {expert: n}}}

Example::

    lease = RedisResidencyLease.from_url("redis://127.0.0.1:6379/0", "coe:")
    pool.residency.share(lease, holder=replica_id(), ttl_s=10)
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

__all__ = ["RedisResidencyLease", "replica_id"]

# take when free, renew when ours: one round trip, atomic
_ACQUIRE = """
local v = redis.call('GET', KEYS[1])
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def replica_id() -> str:
    """This process among the replicas: host, pid and a random part (pids repeat in pods)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisResidencyLease:
    """See the module docstring. Every call raises redis' errors when Redis is down; the
    residency manager then follows (never drives) until the lease is its own again."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, prefix: str, timeout_s: float = 0.5) -> RedisResidencyLease:
        client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        return cls(client, prefix)

    def k(self, name: str) -> str:
        return f"{self.prefix}residency:{name}"

    async def acquire(self, holder: str, ttl_s: float) -> bool:
        return bool(await self._acquire(keys=[self.k("lease")], args=[holder, int(ttl_s * 1000)]))

    async def release(self, holder: str) -> None:
        await self._release(keys=[self.k("lease")], args=[holder])

    async def holder(self) -> str | None:
        value: Any = await self.redis.get(self.k("lease"))
        return value.decode() if value is not None else None

    async def publish(self, resident: Mapping[str, bool]) -> None:
        await self.redis.set(self.k("state"), json.dumps(dict(resident)))

    async def published(self) -> dict[str, bool] | None:
        value: Any = await self.redis.get(self.k("state"))
        return {str(k): bool(v) for k, v in json.loads(value).items()} if value else None

    async def want(self, expert: str) -> None:
        await self.redis.sadd(self.k("want"), expert)

    async def take_wanted(self) -> set[str]:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.smembers(self.k("want"))
            pipe.delete(self.k("want"))
            members, _ = await pipe.execute()
        return {m.decode() for m in members}

    async def report_busy(self, holder: str, in_flight: Mapping[str, int], ttl_s: float) -> None:
        entry = {"until": time.time() + ttl_s, "in_flight": dict(in_flight)}
        await self.redis.hset(self.k("busy"), holder, json.dumps(entry))

    async def busy_elsewhere(self, holder: str) -> dict[str, int]:
        """{expert: calls in flight} summed over the other live replicas; {} when none lives."""
        entries: Any = await self.redis.hgetall(self.k("busy"))
        now, total, stale = time.time(), dict[str, int](), []
        for replica, raw in entries.items():
            entry = json.loads(raw)
            if entry["until"] < now:
                stale.append(replica)
                continue
            if replica.decode() == holder:
                continue
            for name, n in entry["in_flight"].items():
                total[name] = total.get(name, 0) + int(n)
        if stale:
            await self.redis.hdel(self.k("busy"), *stale)
        return total

    async def aclose(self) -> None:
        await self.redis.aclose()
