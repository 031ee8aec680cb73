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
`/sleep` or `/wake_up`: they route by the published state and ask the holder for an asleep
expert they need (`want`, renewed while they wait: the holder keeps it awake until they have
seen it). A follower's call starts only once it is counted in the store under a check that the
published state still says awake (`enter`); the holder publishes an expert asleep *before* it
waits for those counts to fall to zero and puts it to sleep, so no call is ever in flight on a
sleeping expert. A holder that dies stops renewing; after `lease_ttl_s` another takes over.

Example::

    residency = ResidencyManager(engines, http, max_resident=1)
    await residency.start()            # the first evictable expert loaded, the others asleep
    await residency.evict("a"); await residency.make_resident("b")
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Protocol

import httpx

from experts.engines.base import Engine
from experts.errors import ResidencyWaitTimeout

__all__ = ["ResidencyLease", "ResidencyManager"]

log = logging.getLogger("coe.experts.residency")


class ResidencyLease(Protocol):
    """Residency state shared by gateway replicas; every call may raise if the store is down.

    `acquire` takes the lease when it is free and renews it when `holder` has it (True), else
    False. `publish`/`published` carry the holder's view of which experts are awake. `want`
    records for `ttl_s` that a follower waits for an asleep expert (renewed while it waits,
    `unwant` when it is served); `wanted` lists the experts with a live want. `enter` counts a
    follower's call to `expert` only if the published state says it is awake, atomically
    (False: do not start it); `leave` ends it; `calls_elsewhere` sums the calls of other
    replicas that renewed `alive` within its `ttl_s` (a dead replica's calls do not count).
    """

    async def acquire(self, holder: str, ttl_s: float) -> bool: ...
    async def release(self, holder: str) -> None: ...
    async def publish(self, resident: Mapping[str, bool]) -> None: ...
    async def published(self) -> dict[str, bool] | None: ...
    async def want(self, expert: str, replica: str, ttl_s: float) -> None: ...
    async def unwant(self, expert: str, replica: str) -> None: ...
    async def wanted(self) -> set[str]: ...
    async def enter(self, expert: str, replica: str) -> bool: ...
    async def leave(self, expert: str, replica: str) -> None: ...
    async def alive(self, replica: str, ttl_s: float) -> None: ...
    async def calls_elsewhere(self, expert: str, replica: str) -> int: ...


def _forget(serving: dict[str, asyncio.Task[None]], name: str, _: object) -> None:
    serving.pop(name, None)


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
        self._claimed: dict[str, int] = dict.fromkeys(engines, 0)  # calls entered in the store
        self._leaves: set[asyncio.Task[None]] = set()
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

    async def release_lease(self) -> None:
        """Give up the lease if this replica holds it, so another replica drives at once
        instead of when the lease expires."""
        if self.lease is not None and self.leading:
            self.leading = False
            try:
                await self.lease.release(self.holder)
            except Exception as exc:
                log.warning("could not release the residency lease: %s", exc)

    async def stop(self) -> None:
        await self.release_lease()
        await asyncio.gather(*(e.stop() for e in self.engines.values()), return_exceptions=True)

    async def coordinate(
        self, on_demand: Callable[[str], Coroutine[None, None, None]], every_s: float = 0.25
    ) -> None:
        """Run until cancelled: renew or take the lease every `every_s`. Holding it, publish
        the state and serve what followers want (`on_demand(name)`, one task per expert at a
        time; it should wake the expert and `hold_for_followers`); following, say it is alive
        (its entered calls count for `lease_ttl_s`) and adopt the published state."""
        assert self.lease is not None
        self.every_s = every_s
        serving: dict[str, asyncio.Task[None]] = {}
        while True:
            try:
                if await self._lead():
                    await self._publish()
                    for name in await self.lease.wanted():
                        if name in self.engines and name not in serving:
                            task = asyncio.create_task(on_demand(name), name=f"coe-want-{name}")
                            serving[name] = task
                            task.add_done_callback(functools.partial(_forget, serving, name))
                else:
                    await self.lease.alive(self.holder, self.lease_ttl_s)
                    await self._follow()
            except Exception as exc:  # the store is down: try again next round
                log.warning("residency coordination failed: %s", exc)
            await asyncio.sleep(every_s)

    async def hold_for_followers(self, name: str) -> None:
        """The holder, with `name` awake and a slot on it held: return once no follower wants
        it any more and a round has passed for them to enter the calls they queued for it
        (a call that comes too late finds it published asleep and waits again), or after a
        bound."""
        assert self.lease is not None
        deadline = time.monotonic() + 6 * self.lease_ttl_s
        while time.monotonic() < deadline:
            if name not in await self.lease.wanted():
                await asyncio.sleep(self.every_s)
                return
            await asyncio.sleep(self.every_s / 2)

    async def _await_holder(self, name: str) -> None:
        """A follower's wake: ask the holder (again every poll, so that a wake it missed is
        asked for anew) until it publishes `name` awake; bounded, never hangs."""
        assert self.lease is not None
        deadline = time.monotonic() + 6 * self.lease_ttl_s
        try:
            while time.monotonic() < deadline:
                await self.lease.want(name, self.holder, 4 * self.every_s)
                if (await self._follow()).get(name):
                    return
                if await self._lead():  # the holder is gone: this replica drives from now on,
                    # from the state it last saw, and this switch (planned as a follower) fails
                    raise ResidencyWaitTimeout(
                        f"{name}: the replica driving residency changed; retry"
                    )
                await asyncio.sleep(0.2)
        finally:
            try:
                await self.lease.unwant(name, self.holder)
            except Exception as exc:  # expires on its own
                log.warning("could not withdraw the want for %s: %s", name, exc)
        raise ResidencyWaitTimeout(
            f"{name}: the replica driving residency did not wake it in time; retry"
        )

    async def claim(self, name: str) -> bool:
        """A call to `name` is about to start on this replica. Following, count it in the store
        if the published state still says `name` is awake; False (adopting `name` as asleep)
        when it does not: the caller gives its slot back and waits again. True otherwise."""
        if self.lease is None or not self.evictable(name) or self.leading:
            return True
        try:
            entered = await self.lease.enter(name, self.holder)
        except Exception as exc:  # no store: nobody drives until it is back; go ahead
            log.warning("could not register a call to %s with the residency store: %s", name, exc)
            return True
        if entered:
            self._claimed[name] += 1
        else:
            self.engines[name].asleep = True
        return entered

    def unclaim(self, name: str) -> None:
        """A call that `claim` let start has ended (its count leaves the store soon after)."""
        if self.lease is None or self._claimed.get(name, 0) <= 0:
            return
        self._claimed[name] -= 1
        task = asyncio.get_running_loop().create_task(self._leave(name))
        self._leaves.add(task)
        task.add_done_callback(self._leaves.discard)

    async def _leave(self, name: str) -> None:
        assert self.lease is not None
        try:
            await self.lease.leave(name, self.holder)
        except Exception as exc:  # the holder's wait for it is bounded
            log.warning("could not unregister a call to %s: %s", name, exc)

    async def _drain_elsewhere(self, name: str) -> None:
        """The holder, before it puts `name` to sleep: publish it as asleep (from then on no
        other replica can enter a call to it), then wait for the calls they entered to end
        (bounded: a replica that died never leaves its calls)."""
        if self.lease is None:
            return
        self._leaving = name
        await self._publish()
        deadline = time.monotonic() + 6 * self.lease_ttl_s
        while await self.lease.calls_elsewhere(name, self.holder) > 0:
            if time.monotonic() > deadline:
                log.warning("%s still has calls from other replicas; putting it to sleep", name)
                return
            await asyncio.sleep(0.05)

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
