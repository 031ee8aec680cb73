"""Residency: which local experts are in memory, at most `max_resident` of them at once.

A pool with more experts than fit in memory sets `max_resident` in its pool file. Each engine
knows how to leave memory and come back (`Engine.sleep` / `Engine.wake`):

- `vllm`: sleep mode (`POST /sleep?level=1`, `POST /wake_up`, checked with `GET /is_sleeping`);
- `llamacpp` (and a vLLM that coe launched without sleep support): stop / start the process;
- `openai` (remote): always resident, never counted against `max_resident`.

This module does the transitions and counts them; *when* to do them is the scheduler's call
(`experts.scheduler`), which never evicts an expert with calls in flight.

Replicas: when several gateways share experts (vLLM servers on one GPU), one replica at a time
drives the transitions: the holder of a lease with expiry (`ResidencyLease`, on Redis:
`api.store.residency`). It publishes which experts are awake; the others (followers) never call
`/sleep` or `/wake_up`: they route by the published state, ask the holder for an asleep expert
they need (`want`) and report their calls in flight, which the holder waits for before it puts
an expert to sleep. A holder that dies stops renewing; after `lease_ttl_s` another takes over.

Example::

    residency = ResidencyManager(engines, http, max_resident=1)
    await residency.start()            # the first evictable expert loaded, the others asleep
    await residency.evict("a"); await residency.make_resident("b")
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Protocol

import httpx

from experts.engines.base import Engine
from experts.errors import ResidencyError

__all__ = ["ResidencyLease", "ResidencyManager"]

log = logging.getLogger("coe.experts.residency")


class ResidencyLease(Protocol):
    """Residency state shared by gateway replicas; every call may raise if the store is down.

    `acquire` takes the lease when it is free and renews it when `holder` has it (True), else
    False. `publish`/`published` carry the holder's view of which experts are awake. `want`
    records a follower's need for an asleep expert; `take_wanted` hands those to the holder
    once. `report_busy` says how many calls a replica has in flight per expert, for `ttl_s`;
    `busy_elsewhere` sums the live reports of every other replica ({} when none reports).
    """

    async def acquire(self, holder: str, ttl_s: float) -> bool: ...
    async def release(self, holder: str) -> None: ...
    async def publish(self, resident: Mapping[str, bool]) -> None: ...
    async def published(self) -> dict[str, bool] | None: ...
    async def want(self, expert: str) -> None: ...
    async def take_wanted(self) -> set[str]: ...
    async def report_busy(
        self, holder: str, in_flight: Mapping[str, int], ttl_s: float
    ) -> None: ...
    async def busy_elsewhere(self, holder: str) -> dict[str, int]: ...


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
        self.lease: ResidencyLease | None = None
        self.holder = ""
        self.lease_ttl_s = 10.0
        self.every_s = 0.25  # how often `coordinate` runs a round
        self._leaving: str | None = None  # published as asleep while other replicas drain it
        #: True when this replica drives transitions: always without a lease, else while it
        #: holds the lease
        self.leading = True
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

    def share(self, lease: ResidencyLease, holder: str, ttl_s: float = 10.0) -> None:
        """Coordinate with other replicas through `lease` (before `start`); `holder` names
        this replica uniquely."""
        self.lease, self.holder, self.lease_ttl_s = lease, holder, ttl_s

    async def _lead(self) -> bool:
        """Take or renew the lease; False (follow) when another holds it or the store fails."""
        if self.lease is None:
            return True
        try:
            self.leading = await self.lease.acquire(self.holder, self.lease_ttl_s)
        except Exception as exc:
            log.warning("residency lease unavailable, following: %s", exc)
            self.leading = False
        return self.leading

    async def _publish(self) -> None:
        if self.lease is not None and self.leading:
            await self.lease.publish(
                {
                    n: self.resident(n) and n != self._leaving
                    for n in self.engines
                    if self.evictable(n)
                }
            )

    async def _follow(self) -> dict[str, bool]:
        """Adopt the holder's published view of who is awake; returns it ({} when none)."""
        assert self.lease is not None
        state = await self.lease.published() or {}
        for name, awake in state.items():
            if name in self.engines and self.evictable(name):
                self.engines[name].asleep = not awake
        return state

    async def start(self) -> None:
        """Start the pool: the first `max_resident` evictable experts (pool order) and every
        other expert loaded, the rest asleep. If one fails, stop them all and re-raise.

        A follower (another replica holds the lease) starts its engines but leaves residency
        as the holder published it (all evictable experts asleep until it has published)."""
        if self.max_resident is not None and not await self._lead():
            await asyncio.gather(*(e.start() for e in self.engines.values()))
            for name in self.engines:
                self.engines[name].asleep = self.evictable(name)
            try:
                await self._follow()
            except Exception as exc:  # no Redis: no replica drives until it is back
                log.warning("residency state unavailable at start: %s", exc)
            return
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
            await self._publish()
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
        if self.lease is not None and self.leading:
            try:
                await self.lease.release(self.holder)  # another replica takes over at once
            except Exception as exc:
                log.warning("could not release the residency lease: %s", exc)
        await asyncio.gather(*(e.stop() for e in self.engines.values()), return_exceptions=True)

    async def coordinate(
        self,
        in_flight: Callable[[], Mapping[str, int]],
        on_demand: Callable[[str], Coroutine[None, None, None]],
        every_s: float = 0.25,
    ) -> None:
        """Run until cancelled: renew or take the lease every `every_s`. Holding it, publish
        the state and wake what followers want (`on_demand`); following, adopt the published
        state and report this replica's calls in flight."""
        assert self.lease is not None
        self.every_s = every_s
        pending: set[asyncio.Task[None]] = set()
        while True:
            try:
                if await self._lead():
                    await self._publish()
                    for name in await self.lease.take_wanted():
                        if name in self.engines and not self.resident(name):
                            task = asyncio.create_task(on_demand(name), name=f"coe-want-{name}")
                            pending.add(task)
                            task.add_done_callback(pending.discard)
                else:
                    await self._follow()
                    await self.lease.report_busy(self.holder, in_flight(), 4 * every_s)
            except Exception as exc:  # the store is down: try again next round
                log.warning("residency coordination failed: %s", exc)
            await asyncio.sleep(every_s)

    async def _await_holder(self, name: str) -> None:
        """A follower's wake: ask the holder, then wait until it publishes `name` awake."""
        assert self.lease is not None
        deadline = time.monotonic() + 6 * self.lease_ttl_s
        await self.lease.want(name)
        while time.monotonic() < deadline:
            if (await self._follow()).get(name):
                return
            if await self._lead():  # the holder is gone: this replica drives from now on,
                # from the state it last saw, and this switch (planned as a follower) fails
                raise ResidencyError(f"{name}: the replica driving residency changed; retry")
            await asyncio.sleep(0.2)
        raise ResidencyError(f"{name}: the replica driving residency did not wake it in time")

    async def _drain_elsewhere(self, name: str) -> None:
        """The holder, before it puts `name` to sleep while other replicas live: publish it as
        asleep (they stop starting calls to it), give them a few rounds to see that and report,
        then wait for their calls to it to end (bounded)."""
        if self.lease is None or not await self.lease.busy_elsewhere(self.holder):
            return  # no other replica reports: nobody else can be calling it
        self._leaving = name
        await self._publish()
        await asyncio.sleep(2.5 * self.every_s)
        deadline = time.monotonic() + 6 * self.lease_ttl_s
        while (await self.lease.busy_elsewhere(self.holder)).get(name, 0) > 0:
            if time.monotonic() > deadline:
                log.warning("%s still has calls from other replicas; putting it to sleep", name)
                return
            await asyncio.sleep(0.1)

    async def make_resident(self, name: str) -> None:
        """Wake `name` (a no-op when it is resident). Raises what the engine raised."""
        engine = self.engines[name]
        if not engine.asleep:
            return
        if self.lease is not None and not await self._lead():
            await self._await_holder(name)
            return
        started = time.perf_counter()
        await engine.wake(self.http)
        engine.asleep = False
        self._loaded(name, started)
        log.info("woke %s in %.2f s", name, self.last_load_s[name])
        await self._publish()

    async def evict(self, name: str) -> None:
        """Put `name` to sleep. The caller guarantees it has no call in flight."""
        engine = self.engines[name]
        if engine.asleep:
            return
        if self.lease is not None:
            if not await self._lead():
                return  # the holder decides; this replica sees the result when it publishes
            try:
                await self._drain_elsewhere(name)
            finally:
                self._leaving = None
        engine.asleep = True  # first: the supervisor must not restart a process we stop
        try:
            await engine.sleep(self.http)
        except BaseException:
            engine.asleep = False
            raise
        self.evictions[name] += 1
        log.info("put %s to sleep", name)
        await self._publish()
