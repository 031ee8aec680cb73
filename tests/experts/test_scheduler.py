"""The scheduler's decisions on scripted arrival sequences: who wakes when, the wait bound, and
no eviction while calls are in flight. A fake residency records the transitions; nothing sleeps
longer than a few milliseconds."""

from __future__ import annotations

import asyncio
import time

import pytest

from experts.errors import ExpertUnavailable
from experts.scheduler import Scheduler, SchedulingMode

pytestmark = pytest.mark.asyncio


class FakeResidency:
    """Residency that records transitions and checks the scheduler's promise on each eviction."""

    def __init__(self, names: str, resident: str, max_resident: int) -> None:
        self.asleep = {n: n not in resident for n in names}
        self.max_resident = max_resident
        self.loads = dict.fromkeys(names, 0)
        self.log: list[str] = []
        self.scheduler: Scheduler | None = None
        self.broken: set[str] = set()

    def evictable(self, name: str) -> bool:
        return True

    def resident(self, name: str) -> bool:
        return not self.asleep[name]

    def has_room(self) -> bool:
        return sum(not a for a in self.asleep.values()) < self.max_resident

    async def make_resident(self, name: str) -> None:
        await asyncio.sleep(0)
        if name in self.broken:
            raise RuntimeError("weights missing")
        self.log.append(f"wake {name}")
        self.asleep[name] = False
        self.loads[name] += 1

    async def evict(self, name: str) -> None:
        assert self.scheduler is not None
        assert self.scheduler.in_flight(name) == 0, f"{name} evicted with calls in flight"
        self.log.append(f"evict {name}")
        await asyncio.sleep(0)
        self.asleep[name] = True


def make(
    names: str = "abc",
    resident: str = "a",
    max_resident: int = 1,
    limit: int = 1,
    max_wait_s: float = 1000.0,
    mode: SchedulingMode = "grouped",
) -> tuple[Scheduler, FakeResidency]:
    residency = FakeResidency(names, resident, max_resident)
    scheduler = Scheduler(dict.fromkeys(names, limit), residency, max_wait_s, mode)
    residency.scheduler = scheduler
    return scheduler, residency


async def call(s: Scheduler, name: str, served: list[str], hold_s: float = 0.0) -> None:
    await s.acquire(name)
    served.append(name)
    await asyncio.sleep(hold_s)
    s.release(name)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_resident_queue_first_then_the_expert_with_most_waiting_work() -> None:
    s, res = make()
    await s.acquire("a")  # a is busy
    served: list[str] = []
    tasks = [asyncio.create_task(call(s, n, served)) for n in "cbabcb"]
    await settle()
    board = s.snapshot()
    assert (board["a"].queued, board["b"].queued, board["c"].queued) == (1, 3, 2)
    assert board["a"].in_flight == 1 and board["a"].resident and not board["b"].resident
    assert res.log == []  # the resident expert still has work: no switch
    s.release("a")
    await asyncio.gather(*tasks)
    await s.idle()
    assert served == ["a", "b", "b", "b", "c", "c"]
    assert res.log == ["evict a", "wake b", "evict b", "wake c"]  # one wake per batch
    assert [w.forced for w in s.switches] == [False, False]


async def test_no_eviction_while_a_batch_is_in_flight() -> None:
    s, res = make("ab", limit=2)
    await s.acquire("a")
    await s.acquire("a")
    waiter = asyncio.create_task(s.acquire("b"))
    await settle()
    s.release("a")
    await settle()
    assert res.log == [] and not waiter.done()  # one call of the batch still runs
    s.release("a")
    await waiter
    assert res.log == ["evict a", "wake b"]
    s.release("b")


async def test_a_pool_with_room_wakes_at_once() -> None:
    s, res = make("ab", max_resident=2)
    await s.acquire("a")
    await s.acquire("b")  # a is busy, but b fits beside it
    assert res.log == ["wake b"]
    s.release("a")
    s.release("b")


async def test_the_wait_bound_forces_a_switch_away_from_a_busy_expert() -> None:
    s, _res = make("ab", max_wait_s=0.03)
    served: list[str] = []
    a_calls = [asyncio.create_task(call(s, "a", served, hold_s=0.002)) for _ in range(100)]
    await settle()
    arrived = time.monotonic()
    await s.acquire("b")
    waited = time.monotonic() - arrived
    served.append("b")
    s.release("b")
    await asyncio.gather(*a_calls)
    assert s.switches[0].forced and s.switches[0].evict == "a"
    assert 0.03 <= waited < 0.5
    assert served.index("b") < 60  # b did not wait for a's 100 calls to finish
    assert served.count("a") == 100  # a's drained calls were served after the switch back


async def test_fcfs_switches_at_every_change_of_expert() -> None:
    served: list[str] = []
    for mode, expected in (("fcfs", 4), ("grouped", 1)):
        s, _res = make("ab", mode=mode)  # type: ignore[arg-type]
        await s.acquire("a")
        tasks = [asyncio.create_task(call(s, n, served)) for n in "baba"]
        await settle()
        s.release("a")
        await asyncio.gather(*tasks)
        await s.idle()
        assert len(s.switches) == expected, mode


async def test_a_failed_wake_fails_the_waiting_calls_and_the_rest_go_on() -> None:
    s, res = make("abc")
    res.broken.add("b")
    with pytest.raises(ExpertUnavailable, match="could not be loaded: weights missing"):
        await s.acquire("b")
    await s.idle()
    await s.acquire("c")  # the pool is still usable
    assert res.asleep == {"a": True, "b": True, "c": False}
    s.release("c")


async def test_a_cancelled_waiting_call_leaves_the_queue() -> None:
    s, res = make("ab")
    await s.acquire("a")
    waiter = asyncio.create_task(s.acquire("b"))
    await settle()
    assert s.queued("b") == 1
    waiter.cancel()
    await settle()
    assert s.queued("b") == 0
    s.release("a")
    await settle()
    assert res.log == []  # nobody waits for b any more: no wake


async def test_a_forced_wake_serves_its_whole_batch_before_the_next_forced_switch() -> None:
    s, res = make("abc", max_wait_s=0.01)
    await s.acquire("a")  # a is busy until the test says so
    served: list[str] = []
    tasks = [asyncio.create_task(call(s, n, served)) for n in "bbbbbc"]
    await asyncio.sleep(0.02)  # every waiting call is now past the wait bound
    s.release("a")
    await asyncio.gather(*tasks)
    await s.idle()
    # b's five calls (oldest first) in one wake although c's call was overdue all along
    assert served == ["b", "b", "b", "b", "b", "c"]
    assert res.log == ["evict a", "wake b", "evict b", "wake c"]


class RefusingClaims:
    """Replicas' claims: the first claim to `a` finds it gone to sleep elsewhere (the holder
    published it asleep between this replica's grant and the call's start)."""

    def __init__(self, residency: FakeResidency) -> None:
        self.residency = residency
        self.claimed: list[str] = []
        self.unclaimed: list[str] = []
        self.refused = False

    async def claim(self, name: str) -> bool:
        await asyncio.sleep(0)
        if name == "a" and not self.refused:
            self.refused = True
            self.residency.asleep[name] = True  # adopted from the published state
            return False
        self.claimed.append(name)
        return True

    def unclaim(self, name: str) -> None:
        self.unclaimed.append(name)


async def test_a_refused_claim_gives_the_slot_back_and_waits_for_a_wake() -> None:
    s, residency = make("ab", resident="a")
    claims = RefusingClaims(residency)
    s.claims = claims
    served: list[str] = []
    await asyncio.wait_for(call(s, "a", served), 1)
    assert served == ["a"] and residency.log == ["wake a"], "it waited for a again"
    assert claims.claimed == ["a"] and claims.unclaimed == ["a"], "one claim, one unclaim"
    assert s.in_flight("a") == 0, "the refused grant's slot was given back"
