"""Try experts in ranked order until one answers.

A connection failure, a timeout before the first byte, or a 5xx moves on to the next expert
(bounded by `max_attempts`); a 4xx is the request's fault and is returned at once. Every attempt
is recorded, so the response can say which experts were tried and why they failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from experts.errors import ExpertError, ExpertOverloaded, ExpertTimeout
from experts.health import HealthBoard
from experts.tracing import attempt

__all__ = ["AllExpertsFailed", "Attempt", "ExpertRejected", "call_with_fallback"]

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    expert: str
    error: str | None = None
    timed_out: bool = False
    #: shed by the gateway's scheduler (queue full or wait too long): the expert never saw it
    shed: bool = False

    def as_json(self) -> dict[str, str | None]:
        return {"expert": self.expert, "error": self.error}


class AllExpertsFailed(Exception):
    """No expert answered; `attempts` says who was tried and why each failed."""

    def __init__(self, attempts: list[Attempt], timed_out: bool) -> None:
        names = ", ".join(f"{a.expert} ({a.error})" for a in attempts) or "none"
        super().__init__(f"no expert could answer; tried: {names}")
        self.attempts = attempts
        self.timed_out = timed_out


class ExpertRejected(Exception):
    """An expert refused the request itself (4xx): trying another would not help."""

    def __init__(self, error: ExpertError, attempts: list[Attempt]) -> None:
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


async def call_with_fallback(
    ranked: Sequence[str],
    call: Callable[[str], Awaitable[T]],
    health: HealthBoard,
    max_attempts: int,
) -> tuple[str, T, list[Attempt]]:
    """`call(expert)` on each of `ranked[:max_attempts]` until one succeeds."""
    attempts: list[Attempt] = []
    for number, expert in enumerate(ranked[:max_attempts], 1):
        try:
            with attempt(number):  # the expert call's span says which attempt it was
                result = await call(expert)
        except ExpertError as exc:
            shed = isinstance(exc, ExpertOverloaded)
            attempts.append(Attempt(expert, exc.message, isinstance(exc, ExpertTimeout), shed))
            if not exc.retryable:
                raise ExpertRejected(exc, attempts) from exc
            if not shed:  # busy is not broken: routing must not take it for down
                health.mark_failed(expert, exc.message)
            continue
        health.mark_ok(expert)
        attempts.append(Attempt(expert))
        return expert, result, attempts
    raise AllExpertsFailed(
        attempts, timed_out=bool(attempts) and all(a.timed_out for a in attempts)
    )
