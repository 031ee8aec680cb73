"""Shutdown that cannot hang (`experts.shutdown`): a lost cancellation is re-sent, a task that
ignores every one is given up on after the bound, and `LivePool.stop` returns either way.

A lost cancellation is simulated the way CPython 3.11's `asyncio.wait_for` loses one
(gh-86296): the awaited call catches the `CancelledError` once and returns normally, and the
task's loop goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from experts.live import LivePool
from experts.shutdown import bounded, cancel_and_wait
from tests.experts.test_residency import VLLMServers, vllm_pool


async def _swallows_first_cancel(rounds: list[int]) -> None:
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True  # lost: the loop goes on as if nothing happened
        rounds.append(1)


async def _ignores_every_cancel(until: list[bool]) -> None:
    """Loops, swallowing every cancellation, until `until` is filled (the test's cleanup)."""
    while not until:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.01)


async def test_a_lost_cancellation_is_sent_again() -> None:
    rounds: list[int] = []
    task = asyncio.create_task(_swallows_first_cancel(rounds))
    await asyncio.sleep(0.03)
    started = time.monotonic()
    assert await cancel_and_wait(task, 5.0, "the test task")
    assert task.cancelled()
    assert time.monotonic() - started < 1.0  # one re-send (0.1 s), not the 5 s bound


async def test_a_task_that_ignores_every_cancellation_is_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    until: list[bool] = []
    task = asyncio.create_task(_ignores_every_cancel(until))
    await asyncio.sleep(0.03)  # in its loop (a task cancelled before its first step just ends)
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="coe.shutdown"):
        assert not await cancel_and_wait(task, 0.3, "the stubborn task")
    assert 0.3 <= time.monotonic() - started < 1.0
    assert not task.done()
    assert "the stubborn task still running 0.3 s after it was cancelled" in caplog.text
    until.append(True)
    await task


async def test_a_task_that_had_failed_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fail())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="coe.shutdown"):
        assert await cancel_and_wait(task, 1.0, "the failed task")
    assert "the failed task had failed: RuntimeError('boom')" in caplog.text


async def test_the_caller_s_own_cancellation_propagates() -> None:
    until: list[bool] = []
    stubborn = asyncio.create_task(_ignores_every_cancel(until))
    waiter = asyncio.create_task(cancel_and_wait(stubborn, 5.0, "the stubborn task"))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    until.append(True)
    await stubborn


async def test_bounded_gives_up_on_a_step_that_hangs(caplog: pytest.LogCaptureFixture) -> None:
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="coe.shutdown"):
        assert not await bounded(asyncio.Event().wait(), 0.2, "the hanging step")
    assert 0.2 <= time.monotonic() - started < 1.0
    assert "the hanging step did not finish in 0.2 s" in caplog.text


async def test_bounded_logs_a_step_that_raises(caplog: pytest.LogCaptureFixture) -> None:
    async def fail() -> None:
        raise OSError("connection reset")

    with caplog.at_level(logging.ERROR, logger="coe.shutdown"):
        assert not await bounded(fail(), 1.0, "the failing step")
    assert "the failing step failed: OSError('connection reset')" in caplog.text


async def test_bounded_returns_true_on_a_step_that_finishes() -> None:
    done: list[bool] = []

    async def step() -> None:
        await asyncio.sleep(0)
        done.append(True)

    assert await bounded(step(), 1.0, "the step")
    assert done == [True]


class LosingLease:
    """A residency lease held by this replica alone; once `lose` is set, the next `acquire`
    blocks until it is cancelled and then returns as if the reply had arrived (a lost
    cancellation, as in a redis-py call under wait_for). `stubborn`: every cancellation is
    lost, the coordinator never ends."""

    def __init__(self, stubborn: bool = False) -> None:
        self.lose = False
        self.stubborn = stubborn
        self.blocked = asyncio.Event()

    async def acquire(self, holder: str, ttl_s: float) -> bool:
        while self.lose:
            self.blocked.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.lose = self.stubborn
        return True

    async def release(self, holder: str) -> None: ...
    async def publish(self, resident: Mapping[str, bool]) -> None: ...
    async def published(self) -> dict[str, bool] | None:
        return None

    async def want(self, expert: str, replica: str, ttl_s: float) -> None: ...
    async def unwant(self, expert: str, replica: str) -> None: ...
    async def wanted(self) -> set[str]:
        return set()

    async def enter(self, expert: str, replica: str) -> bool:
        return True

    async def leave(self, expert: str, replica: str) -> None: ...
    async def alive(self, replica: str, ttl_s: float) -> None: ...
    async def calls_elsewhere(self, expert: str, replica: str) -> int:
        return 0


async def _pool_in_a_lost_cancel(tmp_path: Path, lease: LosingLease, **kw: float) -> LivePool:
    pool = LivePool(vllm_pool(), tmp_path, transport=httpx.MockTransport(VLLMServers()), **kw)
    pool.residency.share(lease, "replica-1")
    await pool.start()
    assert pool._coordinator is not None
    lease.lose = True
    await asyncio.wait_for(lease.blocked.wait(), 2)  # the coordinator is in its Redis call
    return pool


async def test_live_pool_stops_when_its_coordinator_loses_a_cancellation(
    tmp_path: Path,
) -> None:
    pool = await _pool_in_a_lost_cancel(tmp_path, LosingLease())
    coordinator = pool._coordinator
    assert coordinator is not None
    stop = asyncio.create_task(pool.stop())
    done, _ = await asyncio.wait({stop}, timeout=2)  # not wait_for: it would re-cancel
    if not done:  # the old unbounded await: end the test, not the suite
        coordinator.cancel()  # the second cancellation lands
        await stop
        pytest.fail("LivePool.stop() hung on a coordinator that lost its cancellation")
    await stop
    assert coordinator.cancelled()


async def test_live_pool_stop_gives_up_on_a_coordinator_that_never_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lease = LosingLease(stubborn=True)
    pool = await _pool_in_a_lost_cancel(tmp_path, lease, shutdown_timeout_s=0.3)
    coordinator = pool._coordinator
    assert coordinator is not None
    with caplog.at_level(logging.ERROR, logger="coe.shutdown"):
        await asyncio.wait_for(pool.stop(), 2)
    assert "the residency coordinator still running 0.3 s" in caplog.text
    assert pool.http.is_closed  # the steps after it ran
    lease.stubborn = lease.lose = False  # cleanup: let it honour the next cancellation
    assert await cancel_and_wait(coordinator, 2, "the coordinator")


class RecordingLease(LosingLease):
    def __init__(self) -> None:
        super().__init__()
        self.released: list[str] = []

    async def release(self, holder: str) -> None:
        self.released.append(holder)


async def test_live_pool_stop_gives_up_the_residency_lease(tmp_path: Path) -> None:
    """Another replica drives residency as soon as this one stops, not when the lease expires."""
    lease = RecordingLease()
    pool = LivePool(vllm_pool(), tmp_path, transport=httpx.MockTransport(VLLMServers()))
    pool.residency.share(lease, "replica-1")
    await pool.start()
    assert pool.residency.leading
    await asyncio.wait_for(pool.stop(), 5)
    assert lease.released == ["replica-1"]
