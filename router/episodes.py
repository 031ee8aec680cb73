"""The step-wise protocol a multi-call router gives the gateway: one `Episode` per request.

A router that answers a query with a sequence of calls (the `rl` policy, an agreement `chain`)
has an `episode(...)` method returning an object of this shape; the gateway's cascade executor
(`api.cascade.Cascade`) drives it without knowing which router it is:

    episode = router.episode(embedding, est_costs, question=text, budget=max_cost_usd)
    while (expert := episode.next_expert()) is not None:
        if episode.last_call():          # this reply will be the answer: it may be streamed
            ...
        reply = call(expert)             # on failure: episode.skip(expert)
        episode.record(expert, cost_usd, reply_text)
    answer = replies[episode.answer_expert()]

Contracts: `next_expert` proposes only experts neither excluded, skipped nor already called,
whose estimated cost fits `remaining` (so `max_cost_usd` is a cap the episode respects; the
gateway cuts each call's tokens so the realised cost fits too); `record` and `skip` take only
the expert just proposed.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeGuard

import numpy as np

__all__ = ["Episode", "EpisodeRouter", "runs_episodes"]


class Episode(Protocol):
    """One query's calls, decided one at a time (see the module)."""

    def next_expert(self) -> str | None:
        """The expert to call next, or None: answer now."""

    def record(self, expert: str, cost_usd: float, answer_text: str | None = None) -> None:
        """`expert` (the one just proposed) answered `answer_text`, at `cost_usd`."""

    def skip(self, expert: str) -> None:
        """`expert` (the one just proposed) failed: never propose it again; nothing spent."""

    def exclude(self, experts: set[str]) -> None:
        """Never propose these experts (down, or lacking what the request needs)."""

    @property
    def remaining(self) -> float:
        """USD left of the request's budget (inf without one)."""

    def last_call(self) -> bool:
        """Whether the call just proposed is certain to be the last and to be the answer."""

    def answer_expert(self) -> str | None:
        """The expert whose recorded reply is the answer (None before any reply)."""

    def trace(self) -> Any:
        """What feedback on this episode needs (router-specific; None when it learns none)."""


class EpisodeRouter(Protocol):
    """A router that serves a request as an `Episode` over its `models_`."""

    name: str
    models_: list[str]
    uses_embeddings: bool

    @property
    def max_calls(self) -> int:
        """The most calls one episode makes."""

    def episode(
        self,
        embedding: np.ndarray | None,
        est_costs: np.ndarray,
        *,
        question: str = "",
        cost_weight: float | None = None,
        budget: float | None = None,
        explore: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> Episode:
        """A new episode for one query; `est_costs` (predicted USD) aligns with `models_`;
        `budget` is the request's `max_cost_usd`; `explore` an ε a learning router may use."""


def runs_episodes(router: object) -> TypeGuard[EpisodeRouter]:
    """Whether `router` serves requests as episodes (has an `episode` method)."""
    return callable(getattr(router, "episode", None))
