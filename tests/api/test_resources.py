"""Resources stay bounded and shared work survives a bad input: the embedder fails one batch,
not every later request; counters, cache namespaces and the switch log do not grow forever."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from api.embedding import BatchingEmbedder
from api.store import Charge, MemoryStore
from experts.scheduler import Scheduler, Switch
from tests.conftest import Gateway


class FlakyEmbedder:
    """Gives one vector too few for any batch holding "bad"."""

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.ones((len(texts), 4), dtype=np.float32)
        return vectors[:-1] if any("bad" in t for t in texts) else vectors


async def test_one_bad_batch_fails_only_its_own_requests() -> None:
    embedder = BatchingEmbedder(FlakyEmbedder())
    try:
        with pytest.raises(ValueError, match="vectors"):
            await asyncio.wait_for(embedder.embed_one("bad input"), timeout=5)
        vector = await asyncio.wait_for(embedder.embed_one("a good one"), timeout=5)
        assert vector.shape == (4,)
    finally:
        await embedder.aclose()


async def test_per_minute_counters_are_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("api.store.memory.time.monotonic", lambda: now[0])
    store = MemoryStore()
    for minute in range(500):  # a day of traffic, minute after minute
        now[0] += 60
        charge = Charge("k", str(minute), "2026-12-01", 86_400, tokens=1, nano_usd=1)
        assert await store.admit(charge, 100, 1000, 10**9) is None
    assert len(store._counters) <= 10  # this minute's windows and the budget period
    assert await store.spent_nano_usd("k", "2026-12-01") == 500


async def test_semantic_cache_namespaces_are_bounded() -> None:
    store = MemoryStore(max_cache_entries=3)
    for i in range(50):
        await store.cache_index(f"ns{i}", f"k{i}", b"v", ttl_s=60, max_entries=3)
    assert len(store._index) == 3
    assert await store.cache_candidates("ns49") == [("k49", b"v")]
    assert await store.cache_candidates("ns0") == []


def test_the_switch_log_is_bounded() -> None:
    scheduler = Scheduler({"a": 1}, residency=None)  # type: ignore[arg-type]
    for i in range(20_000):
        scheduler.switches.append(Switch(float(i), None, "a", forced=False))
    assert len(scheduler.switches) == 10_000 and scheduler.switches[-1].at == 19_999


async def test_dashboard_figures_are_computed_off_the_event_loop(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.dashboard import aggregate

    threads: list[str] = []
    real = aggregate.traffic

    def traffic(frame: aggregate.Frame) -> object:
        threads.append(threading.current_thread().name)
        return real(frame)

    monkeypatch.setattr(aggregate, "traffic", traffic)
    assert (await gateway.client.get("/dashboard/api/traffic")).status_code == 200
    assert threads and threads[0] != threading.main_thread().name
