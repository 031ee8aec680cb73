"""The residency lease on Redis: one gateway replica at a time drives sleep and wake.

Implements `experts.residency.ResidencyLease` with five keys under the store's prefix:

    residency:lease   the holder's id, with a TTL (SET NX PX; renewed by the holder only)
    residency:state   JSON {expert: awake} as the holder last published it
    residency:want    a hash {"expert|replica": expiry time}: followers waiting for an expert
    residency:calls   a hash {"expert|replica": n}: followers' calls in flight, each counted
                      atomically with a check of the state (`enter`), so that once the holder
                      has published an expert asleep no new call to it can start anywhere
    residency:alive   a hash {replica: expiry time}, renewed by followers every round: the
                      calls of a replica that stopped renewing (it died) no longer count

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
# count a follower's call only while the published state says the expert is awake
_ENTER = """
local s = redis.call('GET', KEYS[1])
if not s then return 0 end
if cjson.decode(s)[ARGV[1]] ~= true then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return 1
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
        self._enter = client.register_script(_ENTER)

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

    async def want(self, expert: str, replica: str, ttl_s: float) -> None:
        await self.redis.hset(self.k("want"), f"{expert}|{replica}", time.time() + ttl_s)

    async def unwant(self, expert: str, replica: str) -> None:
        await self.redis.hdel(self.k("want"), f"{expert}|{replica}")

    async def wanted(self) -> set[str]:
        """The experts some live follower waits for (expired wants are dropped)."""
        entries: Any = await self.redis.hgetall(self.k("want"))
        now, experts, stale = time.time(), set[str](), []
        for field, until in entries.items():
            if float(until) < now:
                stale.append(field)
            else:
                experts.add(field.decode().rsplit("|", 1)[0])
        if stale:
            await self.redis.hdel(self.k("want"), *stale)
        return experts

    async def enter(self, expert: str, replica: str) -> bool:
        field = f"{expert}|{replica}"
        return bool(
            await self._enter(keys=[self.k("state"), self.k("calls")], args=[expert, field])
        )

    async def leave(self, expert: str, replica: str) -> None:
        await self.redis.hincrby(self.k("calls"), f"{expert}|{replica}", -1)

    async def alive(self, replica: str, ttl_s: float) -> None:
        await self.redis.hset(self.k("alive"), replica, time.time() + ttl_s)

    async def calls_elsewhere(self, expert: str, replica: str) -> int:
        """Calls to `expert` that other live replicas entered and did not leave; the entries
        of replicas that stopped renewing `alive` are dropped."""
        calls: Any = await self.redis.hgetall(self.k("calls"))
        alive: Any = await self.redis.hgetall(self.k("alive"))
        now = time.time()
        live = {r.decode() for r, until in alive.items() if float(until) >= now}
        total, dead = 0, []
        for field, n in calls.items():
            name, owner = field.decode().rsplit("|", 1)
            if owner not in live:
                dead.append(field)
            elif name == expert and owner != replica:
                total += max(int(n), 0)
        if dead:
            await self.redis.hdel(self.k("calls"), *dead)
        gone = [r for r in alive if r.decode() not in live]
        if gone:
            await self.redis.hdel(self.k("alive"), *gone)
        return total

    async def aclose(self) -> None:
        await self.redis.aclose()
