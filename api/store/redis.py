"""The Redis store: shared by every gateway replica behind a load balancer.

Layout under a key prefix (`COE_REDIS_PREFIX`, default `coe:`):

    requests            stream of request records (JSON), bounded by length or age
    req:<request id>    the stream entry id of that request, expiring with the log
    feedback            stream of feedback records
    keys                hash: key SHA-256 -> active key (JSON)
    keys:names          hash: name -> SHA-256 of the active key with that name
    keys:all            hash: key id -> key (JSON), revoked ones too
    rpm:<id>:<minute>   requests admitted in that minute; tpm:... tokens; usd:<id>:<period>
                        nano-USD spent and reserved in that budget period
    cache:<hash>        a cached answer (JSON) with a TTL
    sem:<namespace>     list of (cache key, embedding) for semantic lookup
    keys:revoked        set of revoked key ids (the limits script refuses them)

Every check-and-take (limits, unique key names, log + index) is one Lua script, so replicas never
interleave inside one. Connection errors and timeouts become `StoreUnavailable`; the fallback
store turns those into serving from memory.

The two calls of every request, admission and the request log's batch, go through
`api.store.resp.PipelinedRedis` (one pipelined connection, hiredis); everything else through
redis-py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import Unauthorized
from api.jsonio import dumps, loads
from api.store.base import (
    Adjustment,
    ApiKey,
    CachePuts,
    Charge,
    FeedbackRecord,
    RequestRecord,
    Store,
    StoreUnavailable,
)
from api.store.resp import PipelinedRedis, ReplyError, pack, pack_many

__all__ = ["RedisStore"]

_LOG = """
local id = redis.call('XADD', KEYS[1], ARGV[3], '~', ARGV[4], '*', 'r', ARGV[1])
redis.call('SET', KEYS[2], id, 'EX', ARGV[2])
return id
"""

_ADD_KEY = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[3])
return 1
"""

_REVOKE_KEY = """
local h = redis.call('HGET', KEYS[2], ARGV[1])
if not h then return false end
local key = redis.call('HGET', KEYS[1], h)
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], h)
redis.call('SADD', KEYS[3], string.sub(h, 1, 12))
return key
"""

# KEYS: rpm window, tpm window, budget period, revoked key ids. ARGV: rpm, tpm, budget (-1:
# none), tokens, nano-USD, budget period TTL, key id. Integers only: INCRBY is exact where
# INCRBYFLOAT is not. The revoked check makes a replica's cached key lookup safe: one round
# trip both re-checks the key and takes the request from its limits.
_ADMIT = """
if redis.call('SISMEMBER', KEYS[4], ARGV[7]) == 1 then return 'revoked' end
local rpm, tpm, budget = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, cost = tonumber(ARGV[4]), tonumber(ARGV[5])
if rpm >= 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then return 'rpm' end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if tpm >= 0 and used > 0 and used + tokens > tpm then return 'tpm' end
if budget >= 0 and tonumber(redis.call('GET', KEYS[3]) or '0') + cost > budget then
  return 'budget'
end
redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], 120)
redis.call('INCRBY', KEYS[2], tokens); redis.call('EXPIRE', KEYS[2], 120)
redis.call('INCRBY', KEYS[3], cost); redis.call('EXPIRE', KEYS[3], ARGV[6])
return ''
"""

_WINDOW_TTL_S = 120


@contextmanager
def _unavailable() -> Iterator[None]:
    """Redis's connection errors and timeouts, translated at the boundary."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
        raise StoreUnavailable(f"redis: {exc}") from exc


def _parse(entries: list[Any]) -> list[dict[str, Any]]:
    return [loads(fields[b"r"]) for _, fields in entries]


def _no_script(reply: Any) -> bool:
    """Whether a pipelined reply says Redis does not have the script (it was restarted)."""
    return isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT")


def _stream_ms(ts: float) -> str:
    return str(max(0, int(ts * 1000)))


class RedisStore(Store):
    """The store on one Redis database, every key under `prefix`.

    `max_requests` bounds the request log by length; `retention_s`, when set, bounds it by age
    instead (Redis trims approximately: a few more records may stay). `timeout_s` bounds every
    call, so an unreachable Redis costs a request at most that much before it is served from
    memory, and there are no retries: the fallback store decides what happens next.

    Example::

        store = RedisStore.from_url("redis://127.0.0.1:6379/0")
        await store.ping()
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str = "coe:",
        max_requests: int = 100_000,
        retention_s: float | None = None,
        record_ttl_s: int = 7 * 24 * 3600,
        key_cache_s: float = 1.0,
        fast: PipelinedRedis | None = None,
    ) -> None:
        self.redis = client
        #: The same Redis for admission and the log batch (see the module doc); `from_url`
        #: makes one on the URL's database, and None sends those calls through `client` too.
        self.fast = fast
        #: How long a found key is trusted without asking Redis again. A revocation is seen at
        #: once by the replica that made it, by every replica's limits script (keys with
        #: limits), and by the others' lookups within this many seconds.
        self.key_cache_s = key_cache_s
        self._key_cache: dict[str, tuple[float, ApiKey]] = {}
        self.prefix = prefix
        self.max_requests = max_requests
        self.retention_s = retention_s
        self.record_ttl_s = int(retention_s) if retention_s else record_ttl_s
        self._log = client.register_script(_LOG)
        self._add_key = client.register_script(_ADD_KEY)
        self._revoke_key = client.register_script(_REVOKE_KEY)
        self._admit = client.register_script(_ADMIT)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = "coe:",
        timeout_s: float = 0.5,
        max_requests: int = 100_000,
        retention_s: float | None = None,
        *,
        connect_timeout_s: float | None = None,
        max_connections: int = 64,
        pool_timeout_s: float = 10.0,
    ) -> RedisStore:
        """A store on its own bounded connection pool (no I/O until the first call).

        A burst of calls beyond `max_connections` waits for a free connection (up to
        `pool_timeout_s`) instead of failing: a busy Redis is not an outage. `timeout_s` bounds
        each command once it has a connection, `connect_timeout_s` (default: the same) a new
        connection; those are what make Redis count as unreachable.
        """
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=pool_timeout_s,
            socket_timeout=timeout_s,
            socket_connect_timeout=connect_timeout_s or timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        fast = PipelinedRedis.from_url(url, timeout_s, connect_timeout_s)
        client = aioredis.Redis.from_pool(pool)
        return cls(client, prefix, max_requests, retention_s, fast=fast)

    def k(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def ping(self) -> None:
        """Both connections answer (the request path's is opened here, not by a request)."""
        with _unavailable():
            await self.redis.ping()
            if self.fast is not None:
                await self.fast.call("PING")

    async def aclose(self) -> None:
        if self.fast is not None:
            await self.fast.aclose()
        await self.redis.aclose()

    # --- request log and feedback ----------------------------------------------------------

    def _trim(self) -> tuple[str, str]:
        if self.retention_s:
            return "MINID", _stream_ms(time.time() - self.retention_s)
        return "MAXLEN", str(self.max_requests)

    async def log_request(self, record: RequestRecord) -> None:
        data = dumps(record.as_json())
        keys = [self.k("requests"), self.k(f"req:{record.request_id}")]
        with _unavailable():
            await self._log(keys=keys, args=[data, self.record_ttl_s, *self._trim()])

    async def log_requests(self, records: list[RequestRecord]) -> None:
        """Every record in one pipelined round trip (the log script once per record)."""
        await self.log_and_adjust(records, [])

    async def log_and_adjust(
        self,
        records: list[RequestRecord],
        adjustments: list[Adjustment],
        puts: CachePuts | None = None,
    ) -> None:
        """The records, then the adjustments, then the cache entries, in one pipelined round
        trip. A cache entry that fails is not an error (a cache may miss), and raising would
        have the flusher log the batch's records twice.

        The log script is sent by its sha (`EVALSHA`), not registered with the pipeline: a
        pipeline with scripts asks `SCRIPT EXISTS` first, a second round trip per batch. A
        Redis that lost its scripts (restarted) answers NOSCRIPT for those records only; they
        are logged again through the script object, which loads it. Nothing is applied twice.
        """
        puts = puts or {}
        if not records and not adjustments and not puts:
            return
        if self.fast is None:
            await self._log_and_adjust_redis_py(records, adjustments, puts)
            return
        trim = self._trim()
        calls: list[tuple[list[str], list[bytes | int | float | str]]] = []
        commands: list[tuple[Any, ...]] = []
        for record in records:
            data = dumps(record.as_json())  # orjson: the batch's largest cost
            keys = [self.k("requests"), self.k(f"req:{record.request_id}")]
            args: list[bytes | int | float | str] = [data, self.record_ttl_s, *trim]
            calls.append((keys, args))
            commands.append(("EVALSHA", self._log.sha, 2, *keys, *args))
        for charge, tokens, nano_usd in adjustments:
            commands += self._adjust_commands(charge, tokens, nano_usd)
        for key, (value, ttl_s) in puts.items():
            name, payload, px = self._cache_entry(key, value, ttl_s)
            commands.append(("SET", name, payload, "PX", px))
        with _unavailable():
            results = await self.fast.execute(pack_many(commands), len(commands))
            results = results[: len(results) - len(puts)]
            for (keys, args), result in zip(calls, results, strict=False):
                if _no_script(result):
                    await self._log(keys=keys, args=args)
        failed = [r for r in results if isinstance(r, ReplyError) and not _no_script(r)]
        if failed:
            raise ResponseError(str(failed[0]))

    async def _log_and_adjust_redis_py(
        self, records: list[RequestRecord], adjustments: list[Adjustment], puts: CachePuts
    ) -> None:
        """`log_and_adjust` through redis-py's pipeline (a store made without `fast`)."""
        trim = self._trim()
        calls: list[tuple[list[str], list[bytes | int | float | str]]] = []
        with _unavailable():
            async with self.redis.pipeline(transaction=False) as pipe:
                for record in records:
                    data = dumps(record.as_json())
                    keys = [self.k("requests"), self.k(f"req:{record.request_id}")]
                    args: list[bytes | int | float | str] = [data, self.record_ttl_s, *trim]
                    calls.append((keys, args))
                    pipe.evalsha(self._log.sha, len(keys), *keys, *args)
                for charge, tokens, nano_usd in adjustments:
                    for command in self._adjust_commands(charge, tokens, nano_usd):
                        pipe.execute_command(*command)
                for key, (value, ttl_s) in puts.items():
                    name, payload, px = self._cache_entry(key, value, ttl_s)
                    pipe.set(name, payload, px=px)
                results = await pipe.execute(raise_on_error=False)
                results = results[: len(results) - len(puts)]
            for (keys, args), result in zip(calls, results, strict=False):
                if isinstance(result, NoScriptError):
                    await self._log(keys=keys, args=args)
        failed = [
            r for r in results if isinstance(r, Exception) and not isinstance(r, NoScriptError)
        ]
        if failed:
            raise failed[0]

    async def _range(self, stream: str, since: float, limit: int) -> list[dict[str, Any]]:
        if limit <= 0:
            return []
        # Entry ids are the time a record was logged, at or after its `ts` (arrival): every
        # record with ts >= since has an id >= since.
        with _unavailable():
            entries: Any = await self.redis.xrevrange(
                self.k(stream), max="+", min=_stream_ms(since), count=limit
            )
        entries = list(reversed(entries or []))
        if len(entries) > 500:  # a dashboard window: parse it off the event loop
            items = await asyncio.to_thread(_parse, entries)
        else:
            items = _parse(entries)
        return [item for item in items if item["ts"] >= since]

    async def requests(self, since: float = 0.0, limit: int = 10_000) -> list[RequestRecord]:
        return [RequestRecord.from_json(r) for r in await self._range("requests", since, limit)]

    async def get_request(self, request_id: str) -> RequestRecord | None:
        with _unavailable():
            entry_id = await self.redis.get(self.k(f"req:{request_id}"))
            if entry_id is None:
                return None
            entries: Any = await self.redis.xrange(self.k("requests"), entry_id, entry_id)
        if not entries:
            return None  # trimmed from the stream before its index expired
        return RequestRecord.from_json(loads(entries[0][1][b"r"]))

    async def add_feedback(self, record: FeedbackRecord) -> None:
        data = json.dumps(record.as_json(), separators=(",", ":"))
        kind, threshold = self._trim()
        with _unavailable():
            if kind == "MINID":
                await self.redis.xadd(
                    self.k("feedback"), {"r": data}, minid=threshold, approximate=True
                )
            else:
                await self.redis.xadd(
                    self.k("feedback"), {"r": data}, maxlen=self.max_requests, approximate=True
                )

    async def feedback(self, since: float = 0.0, limit: int = 10_000) -> list[FeedbackRecord]:
        return [FeedbackRecord.from_json(r) for r in await self._range("feedback", since, limit)]

    # --- API keys -------------------------------------------------------------------------

    async def add_key(self, key: ApiKey) -> None:
        data = json.dumps(key.as_json())
        keys = [self.k("keys"), self.k("keys:names"), self.k("keys:all")]
        with _unavailable():
            added = await self._add_key(keys=keys, args=[key.name, key.hash, data, key.id])
        if not added:
            raise ValueError(f"an active key is already named {key.name!r}")

    async def lookup_key(self, key_hash: str | None) -> tuple[bool, ApiKey | None]:
        """Found keys are cached for `key_cache_s`; unknown ones are always asked of Redis."""
        cached = self._key_cache.get(key_hash or "")
        if cached is not None and cached[0] > time.monotonic():
            return True, cached[1]
        with _unavailable():
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hlen(self.k("keys"))
                pipe.hget(self.k("keys"), key_hash or "")
                count, data = await pipe.execute()
        key = ApiKey.from_json(json.loads(data)) if data else None
        if key is not None and self.key_cache_s > 0:
            if len(self._key_cache) > 10_000:
                self._key_cache.clear()
            self._key_cache[key.hash] = (time.monotonic() + self.key_cache_s, key)
        return count > 0, key

    async def keys(self) -> list[ApiKey]:
        with _unavailable():
            values = await self.redis.hvals(self.k("keys:all"))
        return sorted((ApiKey.from_json(json.loads(v)) for v in values), key=lambda k: k.created)

    async def revoke_key(self, name: str) -> ApiKey | None:
        self._key_cache.clear()
        keys = [self.k("keys"), self.k("keys:names"), self.k("keys:revoked")]
        with _unavailable():
            data = await self._revoke_key(keys=keys, args=[name])
            if not data:
                return None
            key = ApiKey.from_json(json.loads(data))
            key.revoked = time.time()
            await self.redis.hset(self.k("keys:all"), key.id, json.dumps(key.as_json()))
        return key

    # --- rate limits and budgets -----------------------------------------------------------

    def _windows(self, charge: Charge) -> list[str]:
        k = charge.key_id
        return [
            self.k(f"rpm:{k}:{charge.minute}"),
            self.k(f"tpm:{k}:{charge.minute}"),
            self.k(f"usd:{k}:{charge.period}"),
        ]

    async def admit(
        self, charge: Charge, rpm: int | None, tpm: int | None, budget_nano_usd: int | None
    ) -> str | None:
        limits = [-1 if v is None else v for v in (rpm, tpm, budget_nano_usd)]
        args: list[int | str] = [*limits, charge.tokens, charge.nano_usd, charge.period_ttl_s]
        args.append(charge.key_id)
        keys = [*self._windows(charge), self.k("keys:revoked")]
        with _unavailable():
            if self.fast is None:
                refused = await self._admit(keys=keys, args=args)
            else:
                [refused] = await self.fast.execute(
                    pack(("EVALSHA", self._admit.sha, 4, *keys, *args))
                )
                if _no_script(refused):  # Redis lost its scripts: the script object loads it
                    refused = await self._admit(keys=keys, args=args)
                elif isinstance(refused, ReplyError):
                    raise ResponseError(str(refused))
        reason = refused.decode() if isinstance(refused, bytes) else str(refused or "")
        if reason == "revoked":  # revoked by another replica since this one cached the key
            self._key_cache.clear()
            raise Unauthorized("this API key has been revoked; ask an admin for a new one")
        return reason or None

    async def adjust(self, charge: Charge, tokens: int, nano_usd: int) -> None:
        with _unavailable():
            async with self.redis.pipeline(transaction=True) as pipe:
                for command in self._adjust_commands(charge, tokens, nano_usd):
                    pipe.execute_command(*command)
                await pipe.execute()

    def _adjust_commands(self, charge: Charge, tokens: int, nano_usd: int) -> list[tuple[Any, ...]]:
        """What settling `charge` by (`tokens`, `nano_usd`) sends: one shape for `adjust` and
        the log batch."""
        _, tokens_key, budget_key = self._windows(charge)
        commands: list[tuple[Any, ...]] = []
        if tokens:
            commands += [("INCRBY", tokens_key, tokens), ("EXPIRE", tokens_key, _WINDOW_TTL_S)]
        if nano_usd:
            commands.append(("INCRBY", budget_key, nano_usd))
            commands.append(("EXPIRE", budget_key, charge.period_ttl_s))
        return commands

    async def spent_nano_usd(self, key_id: str, period: str) -> int:
        with _unavailable():
            value = await self.redis.get(self.k(f"usd:{key_id}:{period}"))
        return int(value or 0)

    async def add_counters(self, counters: list[tuple[str, int, float]]) -> None:
        if not counters:
            return
        with _unavailable():
            async with self.redis.pipeline(transaction=True) as pipe:
                for name, amount, ttl_s in counters:
                    pipe.incrby(self.k(name), amount)
                    pipe.expire(self.k(name), max(1, int(ttl_s)), nx=True)
                await pipe.execute()

    # --- response cache --------------------------------------------------------------------

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        with _unavailable():
            data = await self.redis.get(self.k(f"cache:{key}"))
        return loads(data) if data else None

    async def cache_put(self, key: str, value: dict[str, Any], ttl_s: float) -> None:
        name, payload, px = self._cache_entry(key, value, ttl_s)
        with _unavailable():
            await self.redis.set(name, payload, px=px)

    def _cache_entry(self, key: str, value: dict[str, Any], ttl_s: float) -> tuple[str, bytes, int]:
        """A cache entry's Redis key, payload and TTL in ms: one shape for `cache_put` and the
        log batch's pipelined writes."""
        return self.k(f"cache:{key}"), dumps(value), max(1, int(ttl_s * 1000))

    async def cache_index(
        self, namespace: str, key: str, vector: bytes, ttl_s: float, max_entries: int
    ) -> None:
        name = self.k(f"sem:{namespace}")
        with _unavailable():
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.lpush(name, key.encode() + b"\0" + vector)
                pipe.ltrim(name, 0, max_entries - 1)
                pipe.pexpire(name, max(1, int(ttl_s * 1000)))
                await pipe.execute()

    async def cache_candidates(self, namespace: str) -> list[tuple[str, bytes]]:
        with _unavailable():
            entries: Any = await self.redis.lrange(self.k(f"sem:{namespace}"), 0, -1)
        pairs = [entry.partition(b"\0") for entry in entries]
        return [(key.decode(), vector) for key, _, vector in pairs]
