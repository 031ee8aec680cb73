"""The request log off the request path: records are buffered and written in batches.

Writing each record to Redis as its request ends costs every request a round trip; under load
those round trips, not the work, set the throughput. `LogFlusher` wraps a store: `log_request`
appends to an in-process buffer and returns, and one background task writes whatever has
accumulated with `Store.log_requests` (one pipelined round trip per batch) as soon as the
previous batch is written. So a quiet gateway writes each record at once, and a busy one writes
many per round trip.

Nothing is lost: the buffer is bounded (`max_buffer`; a request that finds it full waits for the
flusher, so memory stays bounded and load sheds onto latency, not onto the log), a failed batch
is retried, and `aclose` (the gateway's shutdown, SIGTERM included) writes everything still
buffered before it closes the store. Reads see buffered records too: `get_request` looks in the
buffer first, and `requests` flushes before it reads.

Example::

    store = LogFlusher(await open_fallback_store(settings))
    await store.log_request(record)   # returns at once
    await store.aclose()              # writes what is left, then closes the inner store
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from api.store.base import ApiKey, Charge, FeedbackRecord, RequestRecord, Store, StoreUnavailable

__all__ = ["LogFlusher"]

log = logging.getLogger("coe.store")


class LogFlusher(Store):
    """`inner` with its request log written in batches by a background task (see module doc).

    Every other call goes straight to `inner`; unknown attributes (`degraded`, `primary`, ...)
    are `inner`'s.
    """

    def __init__(
        self,
        inner: Store,
        max_buffer: int = 10_000,
        max_batch: int = 500,
        retry_s: float = 0.5,
    ) -> None:
        self.inner = inner
        self.max_buffer = max_buffer
        self.max_batch = max_batch
        self.retry_s = retry_s
        self._buffer: list[RequestRecord] = []
        self._writing: list[RequestRecord] = []  # the batch being written now
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0
        self.written = 0

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (during construction): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    # --- the buffered log -------------------------------------------------------------------

    async def log_request(self, record: RequestRecord) -> None:
        if self._closed:  # shutting down: nothing would flush a buffered record any more
            await self.inner.log_request(record)
            return
        while len(self._buffer) >= self.max_buffer:
            self._room.clear()
            await self._room.wait()
        self._buffer.append(record)
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="coe-log-flusher")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._buffer:
                await self._write_one_batch()
            self._idle.set()

    async def _write_one_batch(self) -> None:
        batch = self._buffer[: self.max_batch]
        self._writing = batch
        try:
            await self.inner.log_requests(batch)
        except (StoreUnavailable, OSError) as exc:  # keep them; try again shortly
            log.warning("request log: %d records not written yet (%s); retrying", len(batch), exc)
            self._writing = []
            await asyncio.sleep(self.retry_s)
            return
        del self._buffer[: len(batch)]
        self._writing = []
        self.batches += 1
        self.written += len(batch)
        if len(self._buffer) < self.max_buffer:
            self._room.set()

    async def flush(self) -> None:
        """Wait until every record logged so far is written to `inner`."""
        if self._task is None or self._task.done():
            if self._buffer:  # no task (or it died): write here
                remaining, self._buffer = self._buffer, []
                await self.inner.log_requests(remaining)
            return
        await self._idle.wait()

    async def aclose(self) -> None:
        """Write every buffered record, stop the flusher, close `inner`."""
        self._closed = True
        try:
            if self._task is not None and not self._task.done():
                await asyncio.wait_for(self.flush(), timeout=30)
        except TimeoutError:
            log.error("request log: %d records still unwritten at shutdown", len(self._buffer))
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            if self._buffer:  # whatever the task left: one last direct attempt
                remaining, self._buffer = self._buffer, []
                await self.inner.log_requests(remaining)
            await self.inner.aclose()

    async def requests(self, since: float = 0.0, limit: int = 10_000) -> list[RequestRecord]:
        await self.flush()
        return await self.inner.requests(since, limit)

    async def get_request(self, request_id: str) -> RequestRecord | None:
        for record in (*self._writing, *self._buffer):
            if record.request_id == request_id:
                return record
        return await self.inner.get_request(request_id)

    # --- everything else: straight through ---------------------------------------------------

    async def log_requests(self, records: list[RequestRecord]) -> None:
        for record in records:
            await self.log_request(record)

    async def add_feedback(self, record: FeedbackRecord) -> None:
        await self.inner.add_feedback(record)

    async def feedback(self, since: float = 0.0, limit: int = 10_000) -> list[FeedbackRecord]:
        return await self.inner.feedback(since, limit)

    async def add_key(self, key: ApiKey) -> None:
        await self.inner.add_key(key)

    async def lookup_key(self, key_hash: str | None) -> tuple[bool, ApiKey | None]:
        return await self.inner.lookup_key(key_hash)

    async def keys(self) -> list[ApiKey]:
        return await self.inner.keys()

    async def revoke_key(self, name: str) -> ApiKey | None:
        return await self.inner.revoke_key(name)

    async def admit(
        self, charge: Charge, rpm: int | None, tpm: int | None, budget_nano_usd: int | None
    ) -> str | None:
        return await self.inner.admit(charge, rpm, tpm, budget_nano_usd)

    async def adjust(self, charge: Charge, tokens: int, nano_usd: int) -> None:
        await self.inner.adjust(charge, tokens, nano_usd)

    async def spent_nano_usd(self, key_id: str, period: str) -> int:
        return await self.inner.spent_nano_usd(key_id, period)

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        return await self.inner.cache_get(key)

    async def cache_put(self, key: str, value: dict[str, Any], ttl_s: float) -> None:
        await self.inner.cache_put(key, value, ttl_s)

    async def cache_index(
        self, namespace: str, key: str, vector: bytes, ttl_s: float, max_entries: int
    ) -> None:
        await self.inner.cache_index(namespace, key, vector, ttl_s, max_entries)

    async def cache_candidates(self, namespace: str) -> list[tuple[str, bytes]]:
        return await self.inner.cache_candidates(namespace)

    async def ping(self) -> None:
        await self.inner.ping()

    def status(self) -> dict[str, Any]:
        return self.inner.status() | {"log_buffered": len(self._buffer)}
