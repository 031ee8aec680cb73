"""Serve from Redis while it answers, from memory while it does not, and go back when it does.

No request fails because Redis failed: the first call that finds Redis unreachable logs one
warning and switches every later call to the in-process store at once (no timeout per request);
a background task pings Redis every `retry_s` and switches back when it answers, moving the
requests and feedback logged meanwhile into Redis so the dashboard misses nothing. API keys are
mirrored in memory while Redis is up, and to `key_mirror` (hashes only) so that a gateway that
restarts while Redis is away still refuses unknown keys. A replica that has never reached Redis
and has no mirror cannot know whether keys exist: it fails closed (`lookup_key` raises
`KeysUnknown`, a 503 for the client) until Redis answers. Rate-limit and budget counters kept
in memory during an outage are per replica and start from zero; when Redis is back they are
added to its counters, so the spend of the outage is charged to the keys' budgets there too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

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
from api.store.memory import MemoryStore
from experts.shutdown import SHUTDOWN_TIMEOUT_S, cancel_and_wait

__all__ = ["FallbackStore", "KeysUnknown"]

log = logging.getLogger("coe.store")

T = TypeVar("T")


class KeysUnknown(StoreUnavailable):
    """Redis is unreachable and this replica has never seen its keys: nobody can be let in."""


class FallbackStore(Store):
    """`primary` (Redis) with `local` (memory) standing in while it is unreachable.

    Example::

        store = FallbackStore(RedisStore.from_url(url), MemoryStore())
        await store.start()   # never raises for an unreachable Redis: starts degraded
        ...
        await store.aclose()
    """

    def __init__(
        self,
        primary: Store,
        local: MemoryStore,
        retry_s: float = 2.0,
        key_sync_s: float = 10.0,
        key_mirror: Path | None = None,
        shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
    ) -> None:
        self.primary = primary
        self.shutdown_timeout_s = shutdown_timeout_s
        self.local = local
        self.key_mirror = key_mirror
        self.retry_s = retry_s
        self.key_sync_s = key_sync_s
        self.degraded_since: float | None = None
        self.last_error: str | None = None
        self.outages = 0
        self._watcher: asyncio.Task[None] | None = None
        self._synced_keys_at = 0.0
        #: the keys were read from Redis or the mirror at least once: auth can be decided
        self.keys_known = False
        self._keys_exist = False  # what Redis said last: whether any active key exists

    @property
    def degraded(self) -> bool:
        return self.degraded_since is not None

    def status(self) -> dict[str, Any]:
        """What `/ready` reports about the store."""
        if self.degraded_since is None:
            return {"backend": "redis", "status": "ok", "outages": self.outages}
        return {
            "backend": "memory",
            "status": "degraded",
            "reason": f"redis unreachable since {self.degraded_since:.0f}: {self.last_error}",
            "outages": self.outages,
        }

    async def start(self) -> None:
        try:
            await self.primary.ping()
            await self._sync_keys()
        except StoreUnavailable as exc:
            self._degrade(exc)
            self._load_mirror()
        self._watcher = asyncio.create_task(self._watch(), name="coe-store-watch")

    async def aclose(self) -> None:
        if self._watcher is not None:
            # it may be in a Redis call, where a cancellation can be lost (experts.shutdown)
            await cancel_and_wait(self._watcher, self.shutdown_timeout_s, "the Redis watcher")
            self._watcher = None
        await self.primary.aclose()

    def _degrade(self, exc: StoreUnavailable) -> None:
        if self.degraded_since is None:
            self.degraded_since = time.time()
            self.outages += 1
            log.warning(
                "%s; serving from in-process state (limits per replica) until it is back", exc
            )
        self.last_error = str(exc)

    async def _sync_keys(self) -> None:
        keys = await self.primary.keys()
        self.local.replace_keys(keys)
        self.keys_known = True
        self._synced_keys_at = time.monotonic()
        if self.key_mirror is not None:
            text = json.dumps([k.as_json() for k in keys])
            if not self.key_mirror.exists() or self.key_mirror.read_text() != text:
                self.key_mirror.parent.mkdir(parents=True, exist_ok=True)
                self.key_mirror.write_text(text)

    def _load_mirror(self) -> None:
        if self.key_mirror is None or not self.key_mirror.exists():
            log.warning("no key mirror at %s: refusing /v1 requests (503) until redis is back",
                        self.key_mirror)  # fmt: skip
            return
        keys = [ApiKey.from_json(k) for k in json.loads(self.key_mirror.read_text())]
        self.local.replace_keys(keys)
        self.keys_known = True
        log.warning("keys from %s (%d) stand in until redis is back", self.key_mirror, len(keys))

    async def _recover(self) -> None:
        await self.primary.ping()
        requests, feedback = self.local.take_logs()
        counters = self.local.take_counters()
        try:
            await self._copy(self.primary, requests, feedback, counters)
            await self._sync_keys()
        except StoreUnavailable:
            await self._copy(self.local, requests, feedback, counters)  # gone again: next try
            raise
        log.warning(
            "redis is back after %.0f s; %d requests logged and %d limit windows counted "
            "meanwhile moved to it",
            time.time() - (self.degraded_since or time.time()),
            len(requests),
            len(counters),
        )
        self.degraded_since = None  # every call goes to Redis from here
        # What memory took while the write-back above awaited: moved in the same way.
        late = (*self.local.take_logs(), self.local.take_counters())
        try:
            await self._copy(self.primary, *late)
        except StoreUnavailable as exc:
            await self._copy(self.local, *late)
            self._degrade(exc)

    @staticmethod
    async def _copy(
        into: Store,
        requests: list[RequestRecord],
        feedback: list[FeedbackRecord],
        counters: list[tuple[str, int, float]],
    ) -> None:
        """Write what one store holds into `into`. A record written to Redis before a failure
        may be copied twice: better than lost."""
        for record in requests:
            await into.log_request(record)
        for item in feedback:
            await into.add_feedback(item)
        await into.add_counters(counters)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.retry_s)
            try:
                if self.degraded:
                    await self._recover()
                elif time.monotonic() - self._synced_keys_at >= self.key_sync_s:
                    await self._sync_keys()
            except StoreUnavailable as exc:
                self._degrade(exc)

    async def _use(self, op: Callable[[Store], Awaitable[T]]) -> T:
        if self.degraded_since is None:
            try:
                return await op(self.primary)
            except StoreUnavailable as exc:
                self._degrade(exc)
        return await op(self.local)

    # --- the Store interface, each call through `_use` --------------------------------------

    async def ping(self) -> None:
        await self._use(lambda s: s.ping())

    async def log_request(self, record: RequestRecord) -> None:
        await self._use(lambda s: s.log_request(record))

    async def log_requests(self, records: list[RequestRecord]) -> None:
        await self._use(lambda s: s.log_requests(records))

    async def requests(self, since: float = 0.0, limit: int = 10_000) -> list[RequestRecord]:
        return await self._use(lambda s: s.requests(since, limit))

    async def get_request(self, request_id: str) -> RequestRecord | None:
        return await self._use(lambda s: s.get_request(request_id))

    async def add_feedback(self, record: FeedbackRecord) -> None:
        await self._use(lambda s: s.add_feedback(record))

    async def feedback(self, since: float = 0.0, limit: int = 10_000) -> list[FeedbackRecord]:
        return await self._use(lambda s: s.feedback(since, limit))

    async def add_key(self, key: ApiKey) -> None:
        await self._use(lambda s: s.add_key(key))

    async def lookup_key(self, key_hash: str | None) -> tuple[bool, ApiKey | None]:
        found = await self._use(lambda s: s.lookup_key(key_hash))
        if not self.degraded:
            self._keys_exist = found[0]
            return found
        # Memory stands in: it must not open a gateway that Redis says has keys (a key created
        # since the last sync leaves the mirror empty), nor one whose keys it never saw.
        if not self.keys_known or (self._keys_exist and not found[0]):
            raise KeysUnknown(
                "API keys cannot be checked: Redis is unreachable and this gateway's copy of "
                f"the keys ({self.key_mirror}) is missing or out of date; retry when Redis is back"
            )
        return found

    async def keys(self) -> list[ApiKey]:
        return await self._use(lambda s: s.keys())

    async def revoke_key(self, name: str) -> ApiKey | None:
        return await self._use(lambda s: s.revoke_key(name))

    async def admit(
        self, charge: Charge, rpm: int | None, tpm: int | None, budget_nano_usd: int | None
    ) -> str | None:
        return await self._use(lambda s: s.admit(charge, rpm, tpm, budget_nano_usd))

    async def adjust(self, charge: Charge, tokens: int, nano_usd: int) -> None:
        await self._use(lambda s: s.adjust(charge, tokens, nano_usd))

    async def log_and_adjust(
        self,
        records: list[RequestRecord],
        adjustments: list[Adjustment],
        puts: CachePuts | None = None,
    ) -> None:
        await self._use(lambda s: s.log_and_adjust(records, adjustments, puts))

    async def spent_nano_usd(self, key_id: str, period: str) -> int:
        return await self._use(lambda s: s.spent_nano_usd(key_id, period))

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        return await self._use(lambda s: s.cache_get(key))

    async def cache_put(self, key: str, value: dict[str, Any], ttl_s: float) -> None:
        await self._use(lambda s: s.cache_put(key, value, ttl_s))

    async def cache_index(
        self, namespace: str, key: str, vector: bytes, ttl_s: float, max_entries: int
    ) -> None:
        await self._use(lambda s: s.cache_index(namespace, key, vector, ttl_s, max_entries))

    async def cache_candidates(self, namespace: str) -> list[tuple[str, bytes]]:
        return await self._use(lambda s: s.cache_candidates(namespace))
