"""What routing may know about the live load of each expert: the load board's read-only view.

The expert scheduler (`experts.scheduler.Scheduler`) implements `LoadBoard`; the routing policy,
`/ready` and metrics read it. It lives in `router/` because the policy consumes it and `router`
never imports `experts`.

Example::

    board.snapshot()["smollm2"]  # ExpertLoad(queued=3, in_flight=1, resident=True, ...)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

__all__ = ["ExpertLoad", "LoadBoard"]


@dataclass(frozen=True)
class ExpertLoad:
    """One expert's load at one moment.

    `queued`: calls waiting in the gateway for this expert (for a slot, or for it to be woken);
    `in_flight`: calls being answered now; `resident`: loaded and able to answer without a wake;
    `max_concurrency`: its slot count; `loads`: how many times coe has woken or started it.
    """

    queued: int
    in_flight: int
    resident: bool
    max_concurrency: int = 1
    loads: int = 0

    @property
    def saturated(self) -> bool:
        """Every slot is busy and work is already waiting: a new call would queue."""
        return self.queued > 0 and self.in_flight >= self.max_concurrency

    @property
    def pressure(self) -> float:
        """Work ahead of a new call, in units of the expert's slots (0 when it would start now)."""
        return max(0, self.queued + self.in_flight + 1 - self.max_concurrency) / max(
            1, self.max_concurrency
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class LoadBoard(Protocol):
    """Read-only: every expert's queue depth, in-flight calls and residency, now."""

    def snapshot(self) -> dict[str, ExpertLoad]: ...
