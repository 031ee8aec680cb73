"""`RequestLog.write`: the record and its `on_end` run to the end however the request ends."""

from __future__ import annotations

import asyncio
import time

import pytest

from api.schemas import ChatCompletionRequest
from api.settings import Settings
from api.settle import RequestLog
from api.store import RequestRecord
from api.store.memory import MemoryStore

REQUEST = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])


def record(i: int) -> RequestRecord:
    return RequestRecord(ts=time.time(), request_id=f"r{i}", model="m", status=200, latency_ms=1)


class GatedStore(MemoryStore):
    """`log_request` waits for the test's gate (a store that suspends: Redis, a full buffer)."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.fail = fail

    async def log_request(self, record: RequestRecord) -> None:
        await asyncio.sleep(0)  # a bare yield first, then a future
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("the store broke")
        await super().log_request(record)


async def test_a_write_that_never_waits_is_done_when_it_returns() -> None:
    store, ended = MemoryStore(), []

    async def on_end(logged: RequestRecord) -> None:
        ended.append(logged.request_id)

    await RequestLog(store, Settings()).write(record(0), REQUEST, "key", on_end)
    assert [r.request_id for r in await store.requests()] == ["r0"]
    assert (await store.requests())[0].key_id == "key"
    assert ended == ["r0"]


async def test_a_write_that_waits_finishes_even_when_its_request_is_cancelled() -> None:
    store, ended = GatedStore(), []

    async def on_end(logged: RequestRecord) -> None:
        await asyncio.sleep(0)
        ended.append(logged.request_id)

    log = RequestLog(store, Settings())
    writer = asyncio.create_task(log.write(record(1), REQUEST, None, on_end))
    for _ in range(5):
        await asyncio.sleep(0)
    writer.cancel()  # the client went away while the store was slow
    with pytest.raises(asyncio.CancelledError):
        await writer
    assert await store.requests() == []
    store.gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert [r.request_id for r in await store.requests()] == ["r1"]
    assert ended == ["r1"]


async def test_a_write_that_waits_then_fails_raises_in_its_request() -> None:
    store = GatedStore(fail=True)
    log = RequestLog(store, Settings())
    writer = asyncio.create_task(log.write(record(2), REQUEST))
    await asyncio.sleep(0)
    store.gate.set()
    with pytest.raises(RuntimeError, match="the store broke"):
        await writer
