"""What a composition is made of: a way to call an expert, its answers, and its budget.

A composition never talks HTTP itself: it gets a `Call` (the gateway passes one over its
`ExpertClient`, `coe profile` one over its own pool, tests one over fake experts) and records
every call as a `SubAnswer`, failed ones included, so the response can say who said what, what
it cost and who failed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Budget",
    "Call",
    "CompositionFailed",
    "Estimate",
    "Outcome",
    "Reply",
    "Role",
    "SubAnswer",
]

Json = dict[str, Any]
Role = Literal["proposer", "aggregator", "judge"]


@dataclass(frozen=True)
class Reply:
    """One expert's whole answer and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    usage_estimated: bool = False


#: `call(expert, messages)` → its reply; raises `experts.errors.ExpertError` when it fails.
Call = Callable[[str, list[Json]], Awaitable[Reply]]
#: `estimate(expert, messages)` → USD a call is expected to cost, before making it.
Estimate = Callable[[str, list[Json]], float]


@dataclass
class SubAnswer:
    """One call made by a composition, successful or not.

    `layer` counts rounds: proposers answer in layer 1 (moa's revisions in 2, 3, ...), and the
    closing call (aggregator or judge) is the layer after the last.
    """

    expert: str
    role: Role
    layer: int
    text: str = ""
    error: str | None = None
    timed_out: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    latency_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def settle(self, reply: Reply, started: float) -> None:
        self.text = reply.text
        self.prompt_tokens = reply.prompt_tokens
        self.completion_tokens = reply.completion_tokens
        self.usage_estimated = reply.usage_estimated
        self.cost_usd = reply.cost_usd
        self.latency_ms = (time.perf_counter() - started) * 1000

    def as_json(self) -> Json:
        return {
            "expert": self.expert,
            "role": self.role,
            "layer": self.layer,
            "content": self.text if self.ok else None,
            "error": self.error,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": round(self.cost_usd, 12),
            "latency_ms": round(self.latency_ms, 2),
        }


@dataclass
class Budget:
    """The bounds of one whole composition: a monotonic deadline and a cap on USD spent."""

    deadline: float
    max_cost_usd: float | None = None
    spent_usd: float = 0.0

    @classmethod
    def within(cls, seconds: float, max_cost_usd: float | None = None) -> Budget:
        return cls(time.monotonic() + seconds, max_cost_usd)

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def affords(self, more_usd: float) -> bool:
        return self.max_cost_usd is None or self.spent_usd + more_usd <= self.max_cost_usd + 1e-15


@dataclass
class Outcome:
    """How a composition ended.

    Either `final_call` is set (the aggregator still has to write the answer: the gateway makes
    that call itself, so that it can stream it), or `text` is the answer, taken from `expert`'s.
    """

    strategy: str
    answers: list[SubAnswer]
    text: str | None = None
    expert: str | None = None
    final_call: tuple[str, list[Json]] | None = None
    early_stopped: bool = False
    votes: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[SubAnswer]:
        return [a for a in self.answers if not a.ok]


class CompositionFailed(Exception):
    """Every recruited expert failed; `answers` says who was asked and why each failed."""

    def __init__(self, answers: list[SubAnswer]) -> None:
        names = ", ".join(f"{a.expert} ({a.error})" for a in answers) or "none"
        super().__init__(f"no recruited expert answered; asked: {names}")
        self.answers = answers

    @property
    def timed_out(self) -> bool:
        return bool(self.answers) and all(a.timed_out for a in self.answers)
