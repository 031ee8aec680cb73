"""What the dashboard reads besides the request log: per-key budgets and the experts' load now.

Both are narrow protocols so that the pieces which own the data plug in without the dashboard
knowing them: the key store puts a `BudgetProvider` on `app.state.budgets` (until then budgets
read "no keys configured"); `PoolLoad` joins the scheduler's load board with the health board.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from api.dashboard.models import ExpertLoad
from experts.live import LivePool

__all__ = ["BudgetProvider", "KeyBudget", "KeyStore", "LoadBoard", "PoolLoad", "StoreBudgets"]


@dataclass(frozen=True)
class KeyBudget:
    """An API key's spending limit and what it has spent against it (in its current period)."""

    budget_usd: float
    used_usd: float
    name: str | None = None
    period: str | None = None


@runtime_checkable
class BudgetProvider(Protocol):
    """Budgets per key id (only keys that have one); None while no key is configured at all."""

    async def budgets(self) -> dict[str, KeyBudget] | None: ...


class _Key(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def budget_usd(self) -> float | None: ...
    @property
    def period(self) -> str: ...
    @property
    def revoked(self) -> float | None: ...


class KeyStore(Protocol):
    """The part of a store that keeps API keys and what each has spent in a budget period."""

    async def keys(self) -> Sequence[_Key]: ...
    async def spent_nano_usd(self, key_id: str, period: str) -> int: ...


class StoreBudgets:
    """Budgets as the key store enforces them: each active key's `budget_usd` per period, and
    what it has spent in the current one. `period_window(period, now)` names the current
    window first (the limiter's own function, so both read the same counter)."""

    def __init__(
        self, store: KeyStore, period_window: Callable[[str, float], tuple[str, int, float]]
    ) -> None:
        self.store = store
        self.period_window = period_window

    async def budgets(self) -> dict[str, KeyBudget] | None:
        keys = [k for k in await self.store.keys() if k.revoked is None]
        if not keys:
            return None
        now = time.time()
        budgets = {}
        for key in keys:
            if key.budget_usd is None:
                continue
            window = self.period_window(key.period, now)[0]
            spent = await self.store.spent_nano_usd(key.id, window) / 1e9
            budgets[key.id] = KeyBudget(key.budget_usd, spent, key.name, key.period)
        return budgets


@runtime_checkable
class LoadBoard(Protocol):
    """Per-expert load now: queue depth, calls in flight, up/down and residency."""

    def snapshot(self) -> list[ExpertLoad]: ...


class PoolLoad:
    """The load as the pool's scheduler (queue depth, in flight, residency) and health board
    (up, last error) see it. Residency is the scheduler's: an expert put to sleep (vLLM) or
    stopped (llama.cpp) to make room for another is not resident; a remote one always is."""

    def __init__(self, pool: LivePool) -> None:
        self.pool = pool

    def snapshot(self) -> list[ExpertLoad]:
        health, board = self.pool.health, self.pool.load_board.snapshot()
        return [
            ExpertLoad(
                expert=expert.name,
                up=not health.is_down(expert.name),
                in_flight=board[expert.name].in_flight,
                waiting=board[expert.name].queued,
                max_concurrency=expert.max_concurrency,
                resident=board[expert.name].resident,
                last_error=health.last_error.get(expert.name),
            )
            for expert in self.pool.config.experts
        ]
