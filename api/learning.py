"""Learning from feedback while serving: the contextual-bandit loop of a learning router.

When a learning router (one with live episodes, today `rl`) serves a request, the gateway keeps
what an update needs (the episode's trace: the decisions, their probabilities, the cost) in a
bounded in-process map keyed by request id. `POST /v1/feedback` then turns the client's score
into one update (`router.rl_online.learn`) and writes the router's updated output layers to
`COE_WORK_DIR/online/<router>-<fingerprint>.npz`, which the next start loads, so a restart keeps
what was learned. The fingerprint hashes the trained weights: updates never land on another
artifact. Exploration (ε-greedy on the first call) is `min(COE_EXPLORATION_MAX, 1/√(1 + n))`
after `n` updates: it fades as feedback accumulates and never exceeds the setting.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from router.base import Router
from router.rl import RLRouter
from router.rl_online import Trace, learn, load_online_state, online_state

__all__ = ["OnlineLearner"]

log = logging.getLogger("coe.api")


def _fingerprint(router: RLRouter) -> str:
    digest = hashlib.sha256()
    for name in sorted(router.params_):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(router.params_[name]).tobytes())
    return digest.hexdigest()[:12]


class OnlineLearner:
    """Remembers served episodes (the newest `max_contexts`) and learns from feedback on them."""

    def __init__(
        self,
        routers: Mapping[str, Router],
        work_dir: Path,
        exploration_max: float,
        learning_rate: float,
        max_contexts: int = 10_000,
    ) -> None:
        self.routers = {n: r for n, r in routers.items() if isinstance(r, RLRouter)}
        self.folder = work_dir / "online"
        self.exploration_max = exploration_max
        self.learning_rate = learning_rate
        self.max_contexts = max_contexts
        self._traces: OrderedDict[str, tuple[str, Trace]] = OrderedDict()
        self._unsaved: set[str] = set()  # routers that learned since the last `save`
        self._saving = asyncio.Lock()
        for name, router in self.routers.items():
            path = self.path(name)
            if path.is_file():
                with np.load(path) as saved:
                    load_online_state(router, dict(saved))
                log.info("router %s: %d feedback updates loaded from %s", name,
                         router.online_updates_, path)  # fmt: skip

    def path(self, name: str) -> Path:
        return self.folder / f"{name}-{_fingerprint(self.routers[name])}.npz"

    def exploration(self, router: Router) -> float:
        """ε for `router`'s next episode."""
        if not isinstance(router, RLRouter):
            return 0.0
        return min(self.exploration_max, 1.0 / math.sqrt(1.0 + router.online_updates_))

    def remember(self, request_id: str, router: str, trace: Trace) -> None:
        self._traces[request_id] = (router, trace)
        while len(self._traces) > self.max_contexts:
            self._traces.popitem(last=False)

    def apply(self, request_id: str, score: float) -> dict[str, Any]:
        """Learn from `score` on a served request; says whether and which router learned."""
        found = self._traces.pop(request_id, None)
        if found is None:
            return {"learned": False, "router": None,
                    "reason": "no learning router served this request (or its episode is no "
                              "longer kept)"}  # fmt: skip
        name, trace = found
        router = self.routers[name]
        learn(router, trace, score, self.learning_rate)
        self._unsaved.add(name)
        return {"learned": True, "router": name, "updates": router.online_updates_}

    async def save(self) -> None:
        """Write the routers that learned since the last save, in a worker thread (a file write
        never blocks the event loop); one save at a time, each of a snapshot of the state."""
        async with self._saving:
            while self._unsaved:
                name = self._unsaved.pop()
                learned = online_state(self.routers[name])
                state = {k: np.array(v, copy=True) for k, v in learned.items()}
                await asyncio.to_thread(self._write, self.path(name), state)

    def _write(self, path: Path, state: dict[str, np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **state)  # type: ignore[arg-type]
        os.replace(tmp, path)  # a crash mid-write never leaves a torn file
