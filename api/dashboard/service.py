"""What each dashboard endpoint computes, from the store and the sources on `app.state`.

Read per request from `app.state` (`store`, `pool`, `settings`, and, once they exist, `budgets`
and `load_board`), so a source installed after start is used without the dashboard knowing who
installed it.
"""

from __future__ import annotations

import time
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

__all__ = ["MAX_LOOKUPS", "MAX_RECORDS", "DashboardService"]

#: The most requests (and feedback records) one figure reads: the in-process log's default size.
MAX_RECORDS = 100_000
#: The most requests older than the window looked up to attribute feedback to experts.
MAX_LOOKUPS = 1_000


class DashboardService:
    def __init__(
        self,
        store: Store,
        load_board: LoadBoard,
        budgets: BudgetProvider | None,
        reports_dir: Path | None,
    ) -> None:
        self.store = store
        self.load_board = load_board
        self.budgets = budgets
        self.reports_dir = reports_dir

    @classmethod
    def from_state(cls, state: State) -> DashboardService:
        board = getattr(state, "load_board", None) or PoolLoad(state.pool)
        budgets = getattr(state, "budgets", None)
        return cls(state.store, board, budgets, state.settings.reports_dir)

    async def _frame(self, window: Window, now: float | None) -> aggregate.Frame:
        now = time.time() if now is None else now
        since = aggregate.window_start(now, window)
        records = await self.store.requests(since=since, limit=MAX_RECORDS)
        return aggregate.Frame.build(records, window, now)

    async def _feedback(self, frame: aggregate.Frame) -> list[FeedbackRecord]:
        return await self.store.feedback(since=frame.start, limit=MAX_RECORDS)

    def _load(self) -> list[ExpertLoad]:
        return self.load_board.snapshot()

    async def summary(self, window: Window, now: float | None = None) -> Summary:
        frame = await self._frame(window, now)
        load = self._load()
        up = sum(e.up for e in load)
        return aggregate.summary(frame, await self._feedback(frame), up, len(load))

    async def traffic(self, window: Window, now: float | None = None) -> TrafficReport:
        return aggregate.traffic(await self._frame(window, now))

    async def cost(self, window: Window, now: float | None = None) -> CostReport:
        budgets = await self.budgets.budgets() if self.budgets is not None else None
        return aggregate.cost(await self._frame(window, now), budgets)

    async def latency(self, window: Window, now: float | None = None) -> LatencyReport:
        return aggregate.latency(await self._frame(window, now))

    async def routing(self, window: Window, now: float | None = None) -> RoutingReport:
        return aggregate.routing(await self._frame(window, now), self._load())

    async def quality(self, window: Window, now: float | None = None) -> QualityReport:
        frame = await self._frame(window, now)
        feedback = await self._feedback(frame)
        experts_of = await self._experts_of(frame, feedback)
        return aggregate.quality(frame, feedback, experts_of)

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

    def evaluations(self) -> EvalReports:
        return load_reports(self.reports_dir)
