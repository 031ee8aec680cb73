"""What each dashboard endpoint computes, from the store and the sources on `app.state`.

Read per request from `app.state` (`store`, `pool`, `settings`, and `budgets` once the key store
has put it there); the experts' load comes from the pool's scheduler (`PoolLoad`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.datastructures import State

from api.dashboard import aggregate
from api.dashboard.models import (
    CostReport,
    EvalReports,
    ExpertLoad,
    LatencyReport,
    QualityReport,
    RoutingReport,
    Summary,
    TrafficReport,
    Window,
)
from api.dashboard.reports import load_reports
from api.dashboard.sources import BudgetProvider, LoadBoard, PoolLoad
from api.store import FeedbackRecord, Store

__all__ = ["MAX_LOOKUPS", "MAX_RECORDS", "DashboardService", "FrameCache"]

#: The most requests (and feedback records) one figure reads: the in-process log's default size.
MAX_RECORDS = 100_000
#: The most requests older than the window looked up to attribute feedback to experts.
MAX_LOOKUPS = 1_000


class FrameCache:
    """One window's table per `ttl_s`, shared: the page asks six endpoints at once, and reading
    100,000 records into a table takes about half a second (benchmarks/dashboard.py)."""

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, asyncio.Task[aggregate.Frame]]] = {}

    async def get(
        self, window: Window, build: Callable[[], Awaitable[aggregate.Frame]]
    ) -> aggregate.Frame:
        entry = self._entries.get(window)
        if entry is None or time.monotonic() - entry[0] > self.ttl_s:

            async def run() -> aggregate.Frame:
                return await build()

            entry = (time.monotonic(), asyncio.create_task(run()))
            self._entries[window] = entry
        # shield: a client that goes away must not cancel the build the others wait for
        return await asyncio.shield(entry[1])


class DashboardService:
    def __init__(
        self,
        store: Store,
        load_board: LoadBoard,
        budgets: BudgetProvider | None,
        reports_dir: Path | None,
        frames: FrameCache | None = None,
    ) -> None:
        self.store = store
        self.load_board = load_board
        self.budgets = budgets
        self.reports_dir = reports_dir
        self.frames = frames

    @classmethod
    def from_state(cls, state: State) -> DashboardService:
        board = PoolLoad(state.pool)
        budgets = getattr(state, "budgets", None)
        if getattr(state, "dashboard_frames", None) is None:  # one per app, made on first use
            state.dashboard_frames = FrameCache()
        return cls(state.store, board, budgets, state.settings.reports_dir, state.dashboard_frames)

    async def _build(self, window: Window, now: float) -> aggregate.Frame:
        since = aggregate.window_start(now, window)
        records = await self.store.requests(since=since, limit=MAX_RECORDS)
        # in a thread: the event loop keeps serving chat requests while the table is built
        return await asyncio.to_thread(aggregate.Frame.build, records, window, now)

    async def _frame(self, window: Window, now: float | None) -> aggregate.Frame:
        """The window ending `now`; ending at the present time, shared through the cache."""
        if now is not None or self.frames is None:
            return await self._build(window, time.time() if now is None else now)
        return await self.frames.get(window, lambda: self._build(window, time.time()))

    async def _feedback(self, frame: aggregate.Frame) -> list[FeedbackRecord]:
        return await self.store.feedback(since=frame.start, limit=MAX_RECORDS)

    def _load(self) -> list[ExpertLoad]:
        return self.load_board.snapshot()

    async def summary(self, window: Window, now: float | None = None) -> Summary:
        frame = await self._frame(window, now)
        load = self._load()
        up = sum(e.up for e in load)
        feedback = await self._feedback(frame)
        return await asyncio.to_thread(aggregate.summary, frame, feedback, up, len(load))

    async def traffic(self, window: Window, now: float | None = None) -> TrafficReport:
        return await asyncio.to_thread(aggregate.traffic, await self._frame(window, now))

    async def cost(self, window: Window, now: float | None = None) -> CostReport:
        budgets = await self.budgets.budgets() if self.budgets is not None else None
        return await asyncio.to_thread(aggregate.cost, await self._frame(window, now), budgets)

    async def latency(self, window: Window, now: float | None = None) -> LatencyReport:
        return await asyncio.to_thread(aggregate.latency, await self._frame(window, now))

    async def routing(self, window: Window, now: float | None = None) -> RoutingReport:
        frame = await self._frame(window, now)
        return await asyncio.to_thread(aggregate.routing, frame, self._load())

    async def quality(self, window: Window, now: float | None = None) -> QualityReport:
        frame = await self._frame(window, now)
        feedback = await self._feedback(frame)
        experts_of = await self._experts_of(frame, feedback)
        return await asyncio.to_thread(aggregate.quality, frame, feedback, experts_of)

    async def _experts_of(
        self, frame: aggregate.Frame, feedback: list[FeedbackRecord]
    ) -> dict[str, list[str]]:
        """Who answered each judged request. Feedback can come long after its request, whose
        record is then older than the window: those are looked up one by one (at most
        `MAX_LOOKUPS`; the rest count over time but for no expert)."""
        df = frame.requests
        known = dict(zip(df["request_id"], df["experts"], strict=True))
        missing = list(dict.fromkeys(f.request_id for f in feedback if f.request_id not in known))
        for request_id in missing[:MAX_LOOKUPS]:
            record = await self.store.get_request(request_id)
            if record is not None:
                known[request_id] = record.experts
        return known

    async def evaluations(self) -> EvalReports:
        """The `coe eval` reports, read and parsed in a worker thread."""
        return await asyncio.to_thread(load_reports, self.reports_dir)
