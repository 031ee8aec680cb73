"""Residency: which local experts are in memory, at most `max_resident` of them at once.

A pool with more experts than fit in memory sets `max_resident` in its pool file. Each engine
knows how to leave memory and come back (`Engine.sleep` / `Engine.wake`):

- `vllm`: sleep mode (`POST /sleep?level=1`, `POST /wake_up`, checked with `GET /is_sleeping`);
- `llamacpp` (and a vLLM that coe launched without sleep support): stop / start the process;
- `openai` (remote): always resident, never counted against `max_resident`.

This module does the transitions and counts them; *when* to do them is the scheduler's call
(`experts.scheduler`), which never evicts an expert with calls in flight.

Example::

    residency = ResidencyManager(engines, http, max_resident=1)
    await residency.start()            # the first evictable expert loaded, the others asleep
    await residency.evict("a"); await residency.make_resident("b")
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import httpx

from experts.engines.base import Engine

__all__ = ["ResidencyManager"]

log = logging.getLogger("coe.experts.residency")


class ResidencyManager:
    """Does and counts the residency transitions of a pool's engines.

    `loads[name]` counts every time the expert's weights were loaded (its start when resident
    at start, and every wake); `evictions[name]` every sleep. `last_load_s[name]` is how long the
    last load took.
    """

    def __init__(
        self, engines: Mapping[str, Engine], http: httpx.AsyncClient, max_resident: int | None
    ) -> None:
        self.engines = engines
        self.http = http
        self.max_resident = max_resident
        self.loads: dict[str, int] = dict.fromkeys(engines, 0)
        self.evictions: dict[str, int] = dict.fromkeys(engines, 0)
        self.last_load_s: dict[str, float] = dict.fromkeys(engines, 0.0)

    def evictable(self, name: str) -> bool:
        """Whether coe may put this expert to sleep (only when the pool bounds residency)."""
        return self.max_resident is not None and self.engines[name].evictable

    def resident(self, name: str) -> bool:
        return not self.engines[name].asleep

    def resident_count(self) -> int:
        """Evictable experts in memory now: what `max_resident` bounds."""
        return sum(1 for n in self.engines if self.evictable(n) and self.resident(n))

    def has_room(self) -> bool:
        return self.max_resident is None or self.resident_count() < self.max_resident

    async def start(self) -> None:
        """Start the pool: the first `max_resident` evictable experts (pool order) and every
        other expert loaded, the rest asleep. If one fails, stop them all and re-raise."""
        evictable = [n for n in self.engines if self.evictable(n)]
        asleep = evictable[self.max_resident :] if self.max_resident is not None else []
        awake = [n for n in self.engines if n not in asleep]
        try:
            results = await asyncio.gather(*(self._start(n) for n in awake), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            for name in asleep:  # one at a time: a vLLM loads fully before it can sleep
                self.engines[name].asleep = True
                await self.engines[name].start_asleep(self.http)
        except BaseException:
            await self.stop()
            raise

    async def _start(self, name: str) -> None:
        started = time.perf_counter()
        await self.engines[name].start()
        if self.evictable(name):
            await self.engines[name].ensure_awake(self.http)
        self._loaded(name, started)

    def _loaded(self, name: str, started: float) -> None:
        self.loads[name] += 1
        self.last_load_s[name] = time.perf_counter() - started

    async def stop(self) -> None:
        await asyncio.gather(*(e.stop() for e in self.engines.values()), return_exceptions=True)

    async def make_resident(self, name: str) -> None:
        """Wake `name` (a no-op when it is resident). Raises what the engine raised."""
        engine = self.engines[name]
        if not engine.asleep:
            return
        started = time.perf_counter()
        await engine.wake(self.http)
        engine.asleep = False
        self._loaded(name, started)
        log.info("woke %s in %.2f s", name, self.last_load_s[name])

    async def evict(self, name: str) -> None:
        """Put `name` to sleep. The caller guarantees it has no call in flight."""
        engine = self.engines[name]
        if engine.asleep:
            return
        engine.asleep = True  # first: the supervisor must not restart a process we stop
        try:
            await engine.sleep(self.http)
        except BaseException:
            engine.asleep = False
            raise
        self.evictions[name] += 1
        log.info("put %s to sleep", name)
