"""Which experts to route around: those whose process is gone or that failed recently.

An expert that fails with a connection error or a 5xx is benched for `cooldown_s`; the next
success clears it. Routing puts benched experts last instead of dropping them, so a request can
still reach one when nothing else answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import httpx

from experts.engines.base import Engine

__all__ = ["HealthBoard"]


class HealthBoard:
    def __init__(self, engines: Mapping[str, Engine], cooldown_s: float = 10.0) -> None:
        self.engines = engines
        self.cooldown_s = cooldown_s
        self._benched_until: dict[str, float] = {}
        self.last_error: dict[str, str] = {}

    def mark_failed(self, expert: str, error: str) -> None:
        self._benched_until[expert] = time.monotonic() + self.cooldown_s
        self.last_error[expert] = error

    def mark_ok(self, expert: str) -> None:
        self._benched_until.pop(expert, None)

    def is_down(self, expert: str) -> bool:
        engine = self.engines[expert]
        if not engine.alive() and not engine.asleep:  # an evicted expert is woken, not down
            return True
        return self._benched_until.get(expert, 0.0) > time.monotonic()

    def down(self) -> set[str]:
        return {name for name in self.engines if self.is_down(name)}

    async def probe(self, http: httpx.AsyncClient, timeout_s: float = 2.0) -> dict[str, str]:
        """Ask every expert's `/models` now: `"ok"`, `"asleep"` (evicted; woken on demand), or
        the reason it does not answer."""

        async def one(name: str, engine: Engine) -> tuple[str, str]:
            if engine.asleep:
                return name, "asleep"  # evicted on purpose; probing would need a wake
            if not engine.alive():
                return name, "process not running"
            try:
                response = await http.get(
                    f"{engine.base_url}/models", headers=engine.headers(), timeout=timeout_s
                )
            except httpx.HTTPError as exc:
                return name, f"unreachable: {type(exc).__name__}"
            except Exception as exc:  # an engine that never started has no base_url
                return name, f"not started: {exc}"
            return name, "ok" if response.status_code == 200 else f"HTTP {response.status_code}"

        results = await asyncio.gather(*(one(n, e) for n, e in self.engines.items()))
        for name, status in results:
            if status == "ok":
                self.mark_ok(name)
        return dict(results)
