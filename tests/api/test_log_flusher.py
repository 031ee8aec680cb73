"""The request log written in batches off the request path (`api.store.log_flusher`)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from api.schemas import ChatCompletionRequest
from api.settings import Settings
from api.settle import RequestLog
from api.store import Charge, RequestRecord, StoreUnavailable
from api.store.log_flusher import LogFlusher
from api.store.memory import MemoryStore
from tests.api.conftest import wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def record(i: int) -> RequestRecord:
    return RequestRecord(ts=time.time(), request_id=f"r{i}", model="m", status=200, latency_ms=1)


class SlowStore(MemoryStore):
    """Writes a batch only when the test opens the gate; counts batches; may fail once."""

    def __init__(self, fail_first: bool = False) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.batch_sizes: list[int] = []
        self.fail_first = fail_first

    async def log_requests(self, records: list[RequestRecord]) -> None:
        await self.gate.wait()
        if self.fail_first:
            self.fail_first = False
            raise StoreUnavailable("redis: gone for a moment")
        self.batch_sizes.append(len(records))
        await super().log_requests(records)


async def test_records_logged_during_a_write_go_out_together_and_none_is_lost() -> None:
    inner = SlowStore()
    store = LogFlusher(inner)
    inner.gate.clear()
    for i in range(50):
        await store.log_request(record(i))  # returns at once: nothing is written yet
    assert await inner.requests() == []
    assert (await store.get_request("r7")) is not None  # readable while buffered
    inner.gate.set()
    await store.aclose()
    assert [r.request_id for r in await inner.requests()] == [f"r{i}" for i in range(50)]
    assert len(inner.batch_sizes) <= 2  # the first record alone, then the 49 that waited


async def test_a_full_buffer_makes_the_request_wait_instead_of_dropping() -> None:
    inner = SlowStore()
    store = LogFlusher(inner, max_buffer=3)
    inner.gate.clear()
    for i in range(3):
        await store.log_request(record(i))
    fourth = asyncio.create_task(store.log_request(record(3)))
    await asyncio.sleep(0.05)
    assert not fourth.done()  # bounded: it waits for the flusher
    inner.gate.set()
    await asyncio.wait_for(fourth, 5)
    await store.aclose()
    assert len(await inner.requests()) == 4


async def test_a_failed_batch_is_retried() -> None:
    inner = SlowStore(fail_first=True)
    store = LogFlusher(inner, retry_s=0.01)
    await store.log_request(record(0))
    await asyncio.wait_for(store.flush(), 5)
    assert [r.request_id for r in await store.requests()] == ["r0"]
    await store.aclose()


def charge(key_id: str = "k1", tokens: int = 100, nano_usd: int = 1_000) -> Charge:
    return Charge(key_id, "1", "2026-01-01", 3600, tokens, nano_usd)


async def test_settling_rides_with_the_log_and_admission_waits_for_it() -> None:
    """`adjust` returns at once and goes out with the next batch; the key's next admission
    (and a read of its spend) first waits until it is written, so none sees a stale window."""
    inner = SlowStore()
    store = LogFlusher(inner)
    taken = charge()
    assert await store.admit(taken, None, None, 1_500) is None  # 1,000 of 1,500 reserved
    inner.gate.clear()
    await store.log_request(record(0))
    await store.adjust(taken, -60, -900)  # it really cost 100: returns before any write
    assert await inner.spent_nano_usd("k1", "2026-01-01") == 1_000
    admitted = asyncio.create_task(store.admit(charge(), None, None, 1_500))
    await asyncio.sleep(0.05)
    assert not admitted.done()  # waits for the settling, or it would see 1,000 and refuse
    other = await store.admit(charge("k2"), None, None, 1_500)  # another key does not wait
    assert other is None
    inner.gate.set()
    assert await asyncio.wait_for(admitted, 5) is None
    assert await store.spent_nano_usd("k1", "2026-01-01") == 1_100
    assert inner.batch_sizes == [1]  # the record and the settling in one batch
    await store.aclose()


async def test_a_settling_queued_at_shutdown_is_written() -> None:
    inner = SlowStore()
    store = LogFlusher(inner)
    taken = charge()
    await store.admit(taken, None, None, None)
    inner.gate.clear()
    await store.adjust(taken, 0, -400)
    closing = asyncio.create_task(store.aclose())
    await asyncio.sleep(0.05)
    inner.gate.set()
    await asyncio.wait_for(closing, 5)
    assert await inner.spent_nano_usd("k1", "2026-01-01") == 600


class GatedCache(MemoryStore):
    """Writes cache entries only when the test opens the gate; may refuse one key."""

    def __init__(self, refuse: str | None = None) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.refuse = refuse

    async def cache_put(self, key: str, value: dict[str, object], ttl_s: float) -> None:
        await self.gate.wait()
        if key == self.refuse:
            raise StoreUnavailable("redis: gone for a moment")
        await super().cache_put(key, value, ttl_s)


async def test_a_cache_write_is_queued_and_read_back_at_once() -> None:
    inner = GatedCache(refuse="lost")
    store = LogFlusher(inner)
    await asyncio.wait_for(store.cache_put("sticky", {"expert": "a"}, 60), 1)  # no waiting
    await store.cache_put("lost", {"expert": "b"}, 60)
    assert await inner.cache_get("sticky") is None  # not written yet
    assert await store.cache_get("sticky") == {"expert": "a"}  # this gateway reads its write
    inner.gate.set()
    await store.flush()
    assert await inner.cache_get("sticky") == {"expert": "a"}
    assert await store.cache_get("lost") is None  # a refused cache entry is dropped, not raised
    await store.aclose()


async def test_a_cache_write_queued_at_shutdown_is_written() -> None:
    inner = GatedCache()
    inner.gate.set()
    store = LogFlusher(inner)
    await store.cache_put("k", {"v": 1}, 60)
    await store.aclose()
    assert await inner.cache_get("k") == {"v": 1}


@pytest.mark.integration
def test_sigterm_under_load_loses_no_record(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """A real `coe serve` on Redis, 40 clients, SIGTERM mid-load: every answered request is in
    the log on Redis after the gateway exits."""
    fake_port, port = _free_port(), _free_port()
    pool = tmp_path / "pool.yaml"
    pool.write_text(
        "experts:\n  - {name: fake, engine: openai, max_concurrency: 64, "
        f"base_url: 'http://127.0.0.1:{fake_port}/v1'}}\n"
    )
    env = os.environ | {"COE_REDIS_URL": redis_url, "COE_REDIS_PREFIX": redis_prefix}
    # a loaded test machine must not make the gateway give up on Redis and log in memory
    env |= {"COE_WORK_DIR": str(tmp_path / "coe"), "COE_LOG_LEVEL": "warning",
            "COE_REDIS_TIMEOUT_S": "10"}  # fmt: skip
    here = Path(__file__).resolve().parents[2]
    fake = subprocess.Popen(
        [sys.executable, str(here / "benchmarks/gateway_overhead.py"), "--serve-fake",
         str(fake_port)], env=env, cwd=here)  # fmt: skip
    gateway = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "serve", "--pool", str(pool),
         "--port", str(port)], env=env, cwd=here)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(wait_for(lambda: _up(f"{url}/ready"), timeout_s=60))
        answered = asyncio.run(_load_then_sigterm(url, gateway))
        # uvicorn shuts down gracefully, then re-raises the signal it caught
        assert gateway.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        for proc in (gateway, fake):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    client = redis.Redis.from_url(redis_url)
    logged = client.xlen(f"{redis_prefix}requests")
    client.close()
    assert len(answered) >= 200
    assert logged >= len(answered)  # answered before SIGTERM, or finished during the drain


async def _up(url: str) -> bool:
    try:
        async with httpx.AsyncClient() as client:
            return (await client.get(url, timeout=1)).status_code == 200
    except httpx.TransportError:
        return False


async def _load_then_sigterm(url: str, gateway: subprocess.Popen[bytes]) -> list[str]:
    answered: list[str] = []
    body = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
    stop, flowing = asyncio.Event(), asyncio.Event()

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            while not stop.is_set():
                try:
                    response = await http.post("/v1/chat/completions", json=body)
                except httpx.TransportError:
                    return  # the gateway stopped accepting
                if response.status_code == 200:
                    answered.append(response.json()["id"])
                    if len(answered) >= 200:
                        flowing.set()

    clients = [asyncio.create_task(client()) for _ in range(40)]
    await asyncio.wait_for(flowing.wait(), 60)  # in full flow, then stop it
    gateway.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*clients)
    return answered


class OrderStore(MemoryStore):
    """Notes when a batch goes out, among the test's own events."""

    def __init__(self, events: list[str]) -> None:
        super().__init__()
        self.events = events

    async def log_requests(self, records: list[RequestRecord]) -> None:  # every batch's
        self.events.append("batch")
        await super().log_requests(records)


@pytest.mark.parametrize("settles", [False, True])
async def test_the_request_that_woke_the_flusher_answers_before_its_batch(settles: bool) -> None:
    """An unloaded request does not carry its own log write: the pipeline's settle step
    (`RequestLog.write`: the record, then `on_end`'s settling, in a shielded task) returns,
    and the request answers, before the flusher packs and writes the batch."""
    events: list[str] = []
    store = LogFlusher(OrderStore(events))
    taken = charge()
    assert await store.admit(taken, None, None, 1_500) is None

    async def on_end(_: RequestRecord) -> None:
        await store.adjust(taken, -60, -900)  # what the limiter's settle does

    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    await RequestLog(store, Settings()).write(record(0), request, None, on_end if settles else None)
    events.append("answer")  # the request's next step: its response's bytes
    await store.flush()
    assert events == ["answer", "batch"]
    await store.aclose()
