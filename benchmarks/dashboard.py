"""How long each dashboard figure takes over a full request log (what one poll of the page costs).

    .venv/bin/python benchmarks/dashboard.py

Fills the in-process store with N synthetic requests spread over the last hour (three experts,
a tenth failed, a twentieth streamed, feedback on every tenth) and times each endpoint's
computation in the 1-hour window, median of 5 runs; then one poll as the page makes it (all six
at once, sharing one table through the cache). Prints a table; numbers depend on what else the
machine is running.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time

from api.dashboard import DashboardService
from api.dashboard.models import ExpertLoad
from api.dashboard.service import FrameCache
from api.store import FeedbackRecord, MemoryStore, RequestRecord

EXPERTS = ["small", "medium", "large"]


class StaticLoad:
    def snapshot(self) -> list[ExpertLoad]:
        return [
            ExpertLoad(expert=e, up=True, in_flight=0, waiting=0, max_concurrency=4, resident=True)
            for e in EXPERTS
        ]


async def fill(n: int, now: float) -> MemoryStore:
    rng = random.Random(0)
    store = MemoryStore(max_requests=n)
    for i in range(n):
        failed = rng.random() < 0.1
        expert = rng.choice(EXPERTS)
        record = RequestRecord(
            ts=now - 3500 * (1 - i / n),
            request_id=f"r{i}",
            model=rng.choice(["coe-auto", expert]),
            status=503 if failed else 200,
            latency_ms=rng.lognormvariate(6, 0.5),
            stream=rng.random() < 0.05,
            experts=[] if failed else [expert],
            tried=[expert],
            cost_usd=0.0 if failed else rng.random() * 1e-3,
            key_id=rng.choice([None, "team-a", "team-b"]),
        )
        if record.stream:
            record.ttft_ms = record.latency_ms / 4
        await store.log_request(record)
        if i % 10 == 0:
            await store.add_feedback(FeedbackRecord(record.ts, record.request_id, rng.random()))
    return store


async def main() -> None:
    now = time.time()
    names = ("summary", "traffic", "cost", "latency", "routing", "quality")
    print("| requests in log | " + " | ".join(names) + " | one poll (all six) |")
    print("|---|" + "---|" * (len(names) + 1))
    for n in (1_000, 10_000, 100_000):
        store = await fill(n, now)
        service = DashboardService(store, StaticLoad(), None, None)
        cells = []
        for name in names:
            method = getattr(service, name)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                await method("1h", now)
                times.append(time.perf_counter() - start)
            cells.append(f"{1000 * statistics.median(times):.0f} ms")
        polls = []
        for _ in range(5):
            cached = DashboardService(store, StaticLoad(), None, None, FrameCache())
            start = time.perf_counter()
            await asyncio.gather(*(getattr(cached, name)("1h") for name in names))
            polls.append(time.perf_counter() - start)
        cells.append(f"{1000 * statistics.median(polls):.0f} ms")
        print(f"| {n:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    asyncio.run(main())
