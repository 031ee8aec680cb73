"""The per-expert scheduler: a queue per expert, concurrency slots, and when to switch residency.

Every expert call acquires a slot here first (`ExpertClient` does it) and releases it when the
answer (or the stream) ends. Calls to a resident expert start as soon as it has a free slot.
When calls wait for an expert that is asleep, the scheduler decides whom to wake and whom to put
to sleep so that each wake serves a batch (Symbolic-MoE's grouping, online):

1. resident experts serve their queues first;
2. a switch happens when the pool has room, or when a resident expert is idle (nothing queued,
   nothing in flight): the least recently used idle one sleeps, and the asleep expert with the
   most waiting calls (ties: the oldest call) wakes;
3. no call waits more than `max_wait_s` for its switch to begin: once the oldest waiting call
   for an asleep expert is that old, the resident expert with the least queued work stops taking
   new calls (it *drains*) and is switched out as soon as its in-flight calls end — but never
   before it has served the batch it was woken for (the calls queued for it when it woke), so
   that under overload the experts take turns, a full batch per wake, instead of thrashing;
4. an expert with calls in flight is never put to sleep, and one switch runs at a time.

Queues are bounded (load shedding, not an ever-growing queue): a call that finds `max_queue`
calls already waiting for its expert, or that waits longer than `queue_timeout_s`, is refused
with `ExpertOverloaded` (the gateway answers 503 with `retry-after`, or tries another expert).

`mode="fcfs"` is the baseline the benchmark compares with: calls start in arrival order, and a
call for an asleep expert at the head of the line causes a switch as soon as the in-flight calls
end (a load per change of expert in the arrival sequence).

The scheduler is also the pool's *load board*: `snapshot()` gives every expert's queue depth,
calls in flight and residency (`router.load.ExpertLoad`), which routing, `/ready` and metrics read.

Example::

    scheduler = Scheduler({"a": 1, "b": 1}, residency, max_wait_s=30)
    await scheduler.acquire("b")   # may wait for a batch of "a" to finish and "b" to wake
    try: ... finally: scheduler.release("b")
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from experts.errors import ExpertOverloaded, ExpertUnavailable, ResidencyWaitTimeout
from router.load import ExpertLoad

__all__ = ["Claims", "Residency", "Scheduler", "SchedulingMode", "Switch"]

log = logging.getLogger("coe.experts.scheduler")

SchedulingMode = Literal["grouped", "fcfs"]


class Residency(Protocol):
    """What the scheduler needs of `experts.residency.ResidencyManager`."""

    loads: dict[str, int]

    def evictable(self, name: str) -> bool: ...
    def resident(self, name: str) -> bool: ...
    def has_room(self) -> bool: ...
    async def make_resident(self, name: str) -> None: ...
    async def evict(self, name: str) -> None: ...


class Claims(Protocol):
    """Calls registered with the replica that drives residency (`ResidencyManager` when the
    pool is shared by replicas): `claim` before a granted call starts (False: the expert went
    to sleep elsewhere meanwhile; wait again), `unclaim` when it ends."""

    async def claim(self, name: str) -> bool: ...
    def unclaim(self, name: str) -> None: ...


@dataclass(frozen=True)
class Switch:
    """A residency switch the scheduler decided: at `at`, `evict` (if any) sleeps, `wake` wakes."""

    at: float
    evict: str | None
    wake: str
    forced: bool  # the wait bound forced it while the evicted expert still had work


@dataclass(eq=False)
class _Ticket:
    expert: str
    arrived: float
    seq: int
    future: asyncio.Future[None] = field(repr=False)


class Scheduler:
    """Queues, slots and residency switches for one pool (see the module docstring)."""

    def __init__(
        self,
        limits: Mapping[str, int],
        residency: Residency,
        max_wait_s: float = 30.0,
        mode: SchedulingMode = "grouped",
        clock: Callable[[], float] = time.monotonic,
        max_queue: int | None = None,
        queue_timeout_s: float | None = None,
    ) -> None:
        self.limits = dict(limits)
        self.residency = residency
        self.max_wait_s = max_wait_s
        self.mode = mode
        self.clock = clock
        #: calls that may wait per expert; one more is shed at once (None: unbounded)
        self.max_queue = max_queue
        #: longest a call may wait for its slot before it is shed (None: unbounded)
        self.queue_timeout_s = queue_timeout_s
        self._queues: dict[str, deque[_Ticket]] = {n: deque() for n in limits}
        self._in_flight: dict[str, int] = dict.fromkeys(limits, 0)
        self._last_used: dict[str, float] = dict.fromkeys(limits, 0.0)
        #: per expert, the last call of the batch it was woken for (a forced drain waits for it)
        self._batch_end: dict[str, int] = dict.fromkeys(limits, -1)
        self._seq = itertools.count()
        #: set when replicas share residency: each call is registered before it starts
        self.claims: Claims | None = None
        self._switch: Switch | None = None  # the switch running now
        self._switch_task: asyncio.Task[None] | None = None
        self._draining: str | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: the latest switches decided, in order (tests and benchmarks read it; bounded)
        self.switches: deque[Switch] = deque(maxlen=10_000)

    # -- the load board ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, ExpertLoad]:
        """Every expert's queue depth, calls in flight and residency, now (read-only)."""
        return {
            name: ExpertLoad(
                queued=len(queue),
                in_flight=self._in_flight[name],
                resident=self._resident(name),
                max_concurrency=self.limits[name],
                loads=self.residency.loads.get(name, 0),
            )
            for name, queue in self._queues.items()
        }

    def queued(self, expert: str) -> int:
        return len(self._queues[expert])

    def in_flight(self, expert: str) -> int:
        return self._in_flight[expert]

    # -- the request path ----------------------------------------------------------------------

    async def acquire(self, expert: str) -> None:
        """Wait until `expert` is resident and has a free slot, then hold the slot.

        Raises `ExpertUnavailable` when the expert had to be woken and could not be, and
        `ExpertOverloaded` when its queue is full or the wait passed `queue_timeout_s`.
        """
        queue = self._queues[expert]
        if self.max_queue is not None and len(queue) >= self.max_queue:
            raise ExpertOverloaded(
                expert, f"{len(queue)} calls are already waiting for it", self._retry_after()
            )
        if self.claims is None and self._free_now(expert):
            # What the slow path below does when its ticket is granted on arrival, without the
            # ticket, its future and the timeout's timer (most calls, under every load but
            # saturation): take the slot, then the pump's decisions on the new state.
            next(self._seq)  # the number the ticket would have taken
            self._in_flight[expert] += 1
            self._pump()
            return
        try:
            async with asyncio.timeout(self.queue_timeout_s):
                while True:
                    await self._wait(expert)
                    if await self._claim(expert):
                        return
        except TimeoutError as exc:
            raise ExpertOverloaded(
                expert, f"no slot within {self.queue_timeout_s:g} s", self._retry_after()
            ) from exc

    async def _claim(self, expert: str) -> bool:
        """Register the granted call with the residency driver; on False the slot is given
        back (the expert is now asleep in this replica's view, so waiting again wakes it)."""
        if self.claims is None:
            return True
        try:
            claimed = await self.claims.claim(expert)
        except BaseException:
            self._give_back(expert)
            raise
        if not claimed:
            log.info("%s went to sleep before a granted call started; waiting again", expert)
            self._give_back(expert)
        return claimed

    def _free_now(self, expert: str) -> bool:
        """A call to `expert` arriving now would be granted by the pump at once: it is open with
        a free slot and no call waits for it (nor, first come first served, for any other)."""
        if self._queues[expert] or not self._open(expert):
            return False
        if self._in_flight[expert] >= self.limits[expert]:
            return False
        return self.mode != "fcfs" or self._head() is None

    def _retry_after(self) -> float:
        return min(self.queue_timeout_s or 5.0, 30.0)

    async def _wait(self, expert: str) -> None:
        loop = asyncio.get_running_loop()
        ticket = _Ticket(expert, self.clock(), next(self._seq), loop.create_future())
        self._queues[expert].append(ticket)
        self._pump()
        try:
            await ticket.future
        except asyncio.CancelledError:
            if ticket.future.done() and not ticket.future.cancelled():
                if ticket.future.exception() is None:
                    self._give_back(expert)  # granted just as the caller gave up
            else:
                with contextlib.suppress(ValueError):
                    self._queues[expert].remove(ticket)
                self._pump()
            raise

    def release(self, expert: str) -> None:
        """Give back a slot taken by `acquire`."""
        if self.claims is not None:
            self.claims.unclaim(expert)
        self._give_back(expert)

    def _give_back(self, expert: str) -> None:
        self._in_flight[expert] -= 1
        self._last_used[expert] = self.clock()
        self._pump()

    @contextlib.asynccontextmanager
    async def slot(self, expert: str) -> AsyncIterator[None]:
        """`acquire` and `release` around a block."""
        await self.acquire(expert)
        try:
            yield
        finally:
            self.release(expert)

    async def idle(self) -> None:
        """Wait for the switch in progress, if any (tests and shutdown)."""
        while self._switch_task is not None:
            await asyncio.shield(self._switch_task)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._switch_task is not None:
            self._switch_task.cancel()

    # -- decisions -----------------------------------------------------------------------------

    def _resident(self, name: str) -> bool:
        return self.residency.resident(name)

    def _open(self, name: str) -> bool:
        """Resident and taking new calls (not draining, not being switched out)."""
        leaving = self._switch.evict if self._switch else None
        return self._resident(name) and name != self._draining and name != leaving

    def _grant(self, ticket: _Ticket) -> None:
        self._in_flight[ticket.expert] += 1
        ticket.future.set_result(None)

    def _pump(self) -> None:
        """Start whatever can start, and decide the next switch. Runs on every state change."""
        if self.mode == "fcfs":
            self._grant_fcfs()
        else:
            self._grant_grouped()
        if self._switch is None:
            now = self.clock()
            target = self._fcfs_target() if self.mode == "fcfs" else self._grouped_target(now)
            if target is not None:
                self._plan_switch(target, now)
        self._arm_timer()

    def _grant_grouped(self) -> None:
        for name, queue in self._queues.items():
            if not self._open(name):
                continue
            while queue and self._in_flight[name] < self.limits[name]:
                ticket = queue.popleft()
                if not ticket.future.done():
                    self._grant(ticket)

    def _grant_fcfs(self) -> None:
        while True:
            head = self._head()
            if head is None:
                return
            name = head.expert
            if not self._open(name) or self._in_flight[name] >= self.limits[name]:
                return
            self._queues[name].popleft()
            if not head.future.done():
                self._grant(head)

    def _head(self) -> _Ticket | None:
        heads = [q[0] for q in self._queues.values() if q]
        return min(heads, key=lambda t: t.seq) if heads else None

    def _fcfs_target(self) -> tuple[str, bool] | None:
        head = self._head()
        if head is None or self._resident(head.expert):
            return None
        return head.expert, True  # FCFS switches as soon as the in-flight calls end

    def _grouped_target(self, now: float) -> tuple[str, bool] | None:
        """The asleep expert to wake next, and whether the wait bound forces the switch."""
        waiting = [n for n, q in self._queues.items() if q and not self._resident(n)]
        if not waiting:
            self._draining = None
            return None
        overdue = [n for n in waiting if now - self._queues[n][0].arrived >= self.max_wait_s]
        if overdue:
            return min(overdue, key=lambda n: self._queues[n][0].seq), True
        self._draining = None
        most = max(waiting, key=lambda n: (len(self._queues[n]), -self._queues[n][0].seq))
        return most, False

    def _plan_switch(self, target_forced: tuple[str, bool], now: float) -> None:
        target, forced = target_forced
        if self.residency.has_room():
            self._start_switch(Switch(now, None, target, forced=False))
            return
        candidates = [n for n in self._queues if self.residency.evictable(n) and self._resident(n)]
        if not candidates:
            return
        idle = [n for n in candidates if self._in_flight[n] == 0 and not self._queues[n]]
        if idle:
            victim = min(idle, key=lambda n: self._last_used[n])
            self._start_switch(Switch(now, victim, target, forced=False))
            return
        if not forced:
            return  # serve the resident queues first
        if self._draining not in candidates:
            # (FCFS serves strictly in arrival order: no batch to protect, and waiting for one
            # behind the head of the line would never end)
            done = [n for n in candidates if self.mode == "fcfs" or not self._serving_batch(n)]
            if not done:
                return  # every resident expert is still serving the batch it was woken for
            self._draining = min(
                done,
                key=lambda n: (len(self._queues[n]), self._in_flight[n], self._last_used[n]),
            )
        if self._in_flight[self._draining] == 0:
            victim, self._draining = self._draining, None
            self._start_switch(Switch(now, victim, target, forced=True))

    def _serving_batch(self, name: str) -> bool:
        """Calls of the batch `name` was woken for are still queued."""
        queue = self._queues[name]
        return bool(queue) and queue[0].seq <= self._batch_end[name]

    def _start_switch(self, switch: Switch) -> None:
        self._switch = switch
        self.switches.append(switch)
        log.info("switch: %s -> %s%s", switch.evict, switch.wake, " (forced)" * switch.forced)
        self._switch_task = asyncio.get_running_loop().create_task(
            self._run_switch(switch), name=f"coe-wake-{switch.wake}"
        )

    async def _run_switch(self, switch: Switch) -> None:
        try:
            if switch.evict is not None:
                await self.residency.evict(switch.evict)
            await self.residency.make_resident(switch.wake)
            queue = self._queues[switch.wake]
            self._batch_end[switch.wake] = queue[-1].seq if queue else -1
        except ResidencyWaitTimeout as exc:  # another replica drives: shed, do not mark down
            log.warning("could not switch to %s: %s", switch.wake, exc)
            why, wait = str(exc), self._retry_after()
            self._fail(switch.wake, lambda: ExpertOverloaded(switch.wake, why, wait))
        except Exception as exc:
            log.error("could not switch to %s: %s", switch.wake, exc)
            message = f"could not be loaded: {exc}"
            self._fail(switch.wake, lambda: ExpertUnavailable(switch.wake, message))
        finally:
            self._switch = None
            self._switch_task = None
            self._pump()

    def _fail(self, expert: str, error: Callable[[], ExpertUnavailable]) -> None:
        """Fail every call waiting for `expert` with a fresh `error()` each."""
        queue = self._queues[expert]
        while queue:
            ticket = queue.popleft()
            if not ticket.future.done():
                ticket.future.set_exception(error())

    def _arm_timer(self) -> None:
        """Wake the pump when the oldest call for an asleep expert reaches the wait bound."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.mode != "grouped" or self._switch is not None:
            return
        oldest = [q[0].arrived for n, q in self._queues.items() if q and not self._resident(n)]
        delay = min(oldest) + self.max_wait_s - self.clock() if oldest else 0.0
        if delay > 0:  # an overdue call is served by the release that ends the drain
            self._timer = asyncio.get_running_loop().call_later(delay, self._pump)
