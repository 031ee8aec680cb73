"""Serve from Redis while it answers, from memory while it does not, and go back when it does.

No request fails because Redis failed: the first call that finds Redis unreachable logs one
warning and switches every later call to the in-process store at once (no timeout per request);
a background task pings Redis every `retry_s` and switches back when it answers, moving the
requests and feedback logged meanwhile into Redis so the dashboard misses nothing. API keys are
mirrored in memory while Redis is up, and to `key_mirror` (hashes only) so that a gateway that
restarts while Redis is away still refuses unknown keys; only a replica that has never reached
Redis serves open until it does. Rate-limit and budget counters kept in memory during an outage
are per replica and start from zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from api.store.base import ApiKey, Charge, FeedbackRecord, RequestRecord, Store, StoreUnavailable
from api.store.memory import MemoryStore

__all__ = ["FallbackStore"]

log = logging.getLogger("coe.store")

T = TypeVar("T")


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
    ) -> None:
        self.primary = primary
        self.local = local
        self.key_mirror = key_mirror
        self.retry_s = retry_s
        self.key_sync_s = key_sync_s
        self.degraded_since: float | None = None
        self.last_error: str | None = None
        self.outages = 0
        self._watcher: asyncio.Task[None] | None = None
        self._synced_keys_at = 0.0

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
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
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
        self._synced_keys_at = time.monotonic()
        if self.key_mirror is not None:
            text = json.dumps([k.as_json() for k in keys])
            if not self.key_mirror.exists() or self.key_mirror.read_text() != text:
                self.key_mirror.parent.mkdir(parents=True, exist_ok=True)
                self.key_mirror.write_text(text)

    def _load_mirror(self) -> None:
        if self.key_mirror is None or not self.key_mirror.exists():
            log.warning("no key mirror at %s: serving without API keys until redis is back",
                        self.key_mirror)  # fmt: skip
            return
        keys = [ApiKey.from_json(k) for k in json.loads(self.key_mirror.read_text())]
        self.local.replace_keys(keys)
        log.warning("keys from %s (%d) stand in until redis is back", self.key_mirror, len(keys))

    async def _recover(self) -> None:
        await self.primary.ping()
        requests, feedback = self.local.take_logs()
        try:
            for record in requests:
                await self.primary.log_request(record)
            for item in feedback:
                await self.primary.add_feedback(item)
        except StoreUnavailable:
            for record in requests:  # gone again: keep them in memory for the next try
                await self.local.log_request(record)
            for item in feedback:
                await self.local.add_feedback(item)
            raise
        await self._sync_keys()
        log.warning(
            "redis is back after %.0f s; %d requests logged meanwhile moved to it",
            time.time() - (self.degraded_since or time.time()),
            len(requests),
        )
        self.degraded_since = None

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
        return await self._use(lambda s: s.lookup_key(key_hash))

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
