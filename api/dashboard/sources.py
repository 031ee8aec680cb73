"""What the dashboard reads besides the request log: per-key budgets and the experts' load now.

Both are narrow protocols so that the pieces which own the data plug in without the dashboard
knowing them: the key store puts a `BudgetProvider` on `app.state.budgets`; a scheduler that
knows residency puts a `LoadBoard` on `app.state.load_board`. Until then budgets read "no keys
configured" and the load comes from the pool's own counters (`PoolLoad`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from api.dashboard.models import ExpertLoad
from experts.live import LivePool

__all__ = ["BudgetProvider", "KeyBudget", "LoadBoard", "PoolLoad"]


@dataclass(frozen=True)
class KeyBudget:
    """An API key's spending limit and what it has spent against it (in its current period)."""

    budget_usd: float
    used_usd: float


@runtime_checkable
class BudgetProvider(Protocol):
    """Budgets per key id; only keys that have a budget need be present."""

    async def budgets(self) -> dict[str, KeyBudget]: ...


@runtime_checkable
class LoadBoard(Protocol):
    """Per-expert load now: queue depth, calls in flight, up/down and residency."""

    def snapshot(self) -> list[ExpertLoad]: ...


class PoolLoad:
    """The load as the pool's client and health board count it.

    Residency here is "the engine's process is alive": for a local llama.cpp expert that means its
    weights are loaded; a remote endpoint is always resident. A scheduler that sleeps and wakes
    vLLM experts knows better and replaces this with its own `LoadBoard`.
    """

    def __init__(self, pool: LivePool) -> None:
        self.pool = pool

    def snapshot(self) -> list[ExpertLoad]:
        client, health = self.pool.client, self.pool.health
        return [
            ExpertLoad(
                expert=expert.name,
                up=not health.is_down(expert.name),
                in_flight=client.in_flight(expert.name),
                waiting=client.waiting[expert.name],
                max_concurrency=expert.max_concurrency,
                resident=self.pool.engines[expert.name].alive(),
                last_error=health.last_error.get(expert.name),
            )
            for expert in self.pool.config.experts
        ]
