"""The request log off the request path: records are buffered and written in batches.

Writing each record to Redis as its request ends costs every request a round trip; under load
those round trips, not the work, set the throughput. `LogFlusher` wraps a store: `log_request`
appends to an in-process buffer and returns, and one background task writes whatever has
accumulated with `Store.log_requests` (one pipelined round trip per batch) as soon as the
previous batch is written. So a quiet gateway writes each record at once, and a busy one writes
many per round trip.

Budget settling rides along: `adjust` (a request's reservation replaced by what it used)
is queued like a record and written in the same round trip as the log batch, so a request
ends without waiting on Redis. Admission stays exact on this gateway: `admit` for a key first
waits until every adjustment of that key queued before it is written, so a request never sees
its key's windows without the settling of a request that ended before it arrived, as when each
request settled in its own round trip. `spent_nano_usd` waits the same way. (Another replica
sharing the Redis sees a settling at most one flush later; until then it sees the reservation,
which is never less than the real cost, so a budget can only be held back, never overrun.)

Cache writes ride along too (the conversation's expert, a cached answer): `cache_put` queues
the entry and returns, the flusher writes the queued entries in the batch's round trip, and
`cache_get` answers from the queue first, so this gateway reads its own writes at once (another
replica one flush later, which for a cache means a miss, never a wrong answer).

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
import logging
from typing import Any

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
from experts.shutdown import SHUTDOWN_TIMEOUT_S, cancel_and_wait

__all__ = ["LogFlusher"]

log = logging.getLogger("coe.store")

#: loop turns the flusher lets pass before writing, so the request that woke it answers first
_ANSWER_TURNS = 2


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
        shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
    ) -> None:
        self.inner = inner
        self.shutdown_timeout_s = shutdown_timeout_s  # bounds stopping the flusher task
        self.max_buffer = max_buffer
        self.max_batch = max_batch
        self.retry_s = retry_s
        self._buffer: list[RequestRecord] = []
        self._writing: list[RequestRecord] = []  # the batch being written now
        self._adjusts: list[Adjustment] = []  # settlings not written yet, oldest first
        self._queued = 0  # adjustments queued so far; `_written` of them are written
        self._written = 0
        self._last_queued: dict[str, int] = {}  # key id -> `_queued` after its latest adjust
        self._puts: CachePuts = {}  # cache entries not written yet
        self._putting: CachePuts = {}  # the cache entries being written now
        self._progress = asyncio.Event()  # set (and replaced) after each written batch
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
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="coe-log-flusher")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            # A few turns of the loop first: the request that woke the flusher (its record was
            # logged just before it answered) sends its answer before this task spends its
            # time packing the batch, so an unloaded request does not carry its own log write.
            # The request logs in a shielded task (`RequestLog.write`), and its wake-up after
            # that task costs it two turns past this one's (tested; one turn was measured to
            # put the batch's write before the answer's under strace).
            for _ in range(_ANSWER_TURNS):
                await asyncio.sleep(0)
            self._wake.clear()
            while self._buffer or self._adjusts or self._puts:
                await self._write_one_batch()
            self._idle.set()

    async def _write_one_batch(self) -> None:
        batch = self._buffer[: self.max_batch]
        adjusts = self._adjusts[: self.max_batch]
        self._writing = batch
        self._putting, self._puts = self._puts, {}
        try:
            if adjusts or self._putting:
                await self.inner.log_and_adjust(batch, adjusts, self._putting)
            else:
                await self.inner.log_requests(batch)
        except (StoreUnavailable, OSError) as exc:  # keep them; try again shortly
            log.warning("request log: %d records not written yet (%s); retrying", len(batch), exc)
            self._writing = []
            self._puts, self._putting = self._putting | self._puts, {}  # newer entries win
            await asyncio.sleep(self.retry_s)
            return
        del self._buffer[: len(batch)]
        del self._adjusts[: len(adjusts)]
        self._writing = []
        self._putting = {}
        self.batches += 1
        self.written += len(batch)
        self._settled(len(adjusts))
        if len(self._buffer) < self.max_buffer:
            self._room.set()

    def _settled(self, count: int) -> None:
        """`count` more adjustments are written: wake whoever waits for them."""
        if count:
            self._written += count
            done, self._progress = self._progress, asyncio.Event()
            done.set()

    async def _settle_first(self, key_id: str) -> None:
        """Wait until every adjustment queued for `key_id` so far is written."""
        target = self._last_queued.get(key_id, 0)
        while self._written < target:
            if self._task is None or self._task.done():  # no flusher (it died): write here
                await self._write_here()
                return
            await self._progress.wait()
        if self._last_queued.get(key_id) == target:  # nothing newer: forget the key
            del self._last_queued[key_id]

    async def _write_here(self) -> None:
        """Write whatever is buffered and queued in this task (no flusher task is running)."""
        if self._buffer or self._adjusts or self._puts:
            remaining, self._buffer = self._buffer, []
            adjusts, self._adjusts = self._adjusts, []
            puts, self._puts = self._puts, {}
            await self.inner.log_and_adjust(remaining, adjusts, puts)
            self._settled(len(adjusts))

    async def flush(self) -> None:
        """Wait until every record logged and adjustment queued so far is written to `inner`."""
        if self._task is None or self._task.done():
            await self._write_here()  # no task (or it died)
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
                # it may be in a Redis write, where a cancellation can be lost (experts.shutdown)
                timeout = self.shutdown_timeout_s
                await cancel_and_wait(self._task, timeout, "the request log's flusher")
                self._task = None
            await self._write_here()  # whatever the task left: one last attempt
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

    async def log_and_adjust(
        self,
        records: list[RequestRecord],
        adjustments: list[Adjustment],
        puts: CachePuts | None = None,
    ) -> None:
        for record in records:
            await self.log_request(record)
        for charge, tokens, nano_usd in adjustments:
            await self.adjust(charge, tokens, nano_usd)
        for key, (value, ttl_s) in (puts or {}).items():
            await self.cache_put(key, value, ttl_s)

    # --- budgets: settled by the flusher, admitted after the key's settlings ----------------

    async def admit(
        self, charge: Charge, rpm: int | None, tpm: int | None, budget_nano_usd: int | None
    ) -> str | None:
        await self._settle_first(charge.key_id)
        return await self.inner.admit(charge, rpm, tpm, budget_nano_usd)

    async def adjust(self, charge: Charge, tokens: int, nano_usd: int) -> None:
        """Queued for the flusher's next round trip (written at once when shutting down)."""
        if self._closed:
            await self.inner.adjust(charge, tokens, nano_usd)
            return
        self._adjusts.append((charge, tokens, nano_usd))
        self._queued += 1
        self._last_queued[charge.key_id] = self._queued
        self._kick()

    async def spent_nano_usd(self, key_id: str, period: str) -> int:
        await self._settle_first(key_id)
        return await self.inner.spent_nano_usd(key_id, period)

    async def cache_get(self, key: str) -> dict[str, Any] | None:
        queued = self._puts.get(key) or self._putting.get(key)  # this gateway's own writes
        if queued is not None:
            return queued[0]
        return await self.inner.cache_get(key)

    async def cache_put(self, key: str, value: dict[str, Any], ttl_s: float) -> None:
        if self._closed:  # shutting down: nothing would write a queued entry any more
            await self.inner.cache_put(key, value, ttl_s)
            return
        self._puts[key] = (value, ttl_s)  # the request answers without waiting on the store
        self._kick()

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
