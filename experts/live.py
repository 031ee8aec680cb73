"""A running pool: its engines started, one shared HTTP client, and the health board.

Created and closed by the gateway's lifespan (never at import)::

    async with LivePool(load_pool("config/local.yaml"), work_dir) as pool:
        answer = await pool.client.complete("smollm2-135m", body)
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from types import TracebackType

import httpx

from experts.client import ExpertClient, Timeouts
from experts.engines import Engine, make_engine
from experts.errors import EngineStartError
from experts.health import HealthBoard
from experts.hop import AiohttpHop, Hop, HttpxHop
from experts.pool import PoolConfig
from experts.residency import ResidencyManager
from experts.scheduler import Scheduler, SchedulingMode
from experts.shutdown import SHUTDOWN_TIMEOUT_S, bounded, cancel_and_wait
from experts.transport import ShardedTransport
from router.descriptor import ExpertDescriptor
from router.load import LoadBoard

__all__ = ["LivePool"]

log = logging.getLogger("coe.experts")


class LivePool:
    def __init__(
        self,
        config: PoolConfig,
        work_dir: Path,
        timeouts: Timeouts | None = None,
        cooldown_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 512,
        supervise_every_s: float = 2.0,
        max_wait_s: float = 30.0,
        scheduling: SchedulingMode = "grouped",
        shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
    ) -> None:
        self.config = config
        self.shutdown_timeout_s = shutdown_timeout_s  # the bound on each step of `stop`
        self.engines: dict[str, Engine] = {e.name: make_engine(e, work_dir) for e in config.experts}
        # Small pools, not one big one: httpcore's pool does work per connection on every
        # request (experts/transport.py), which made throughput fall as clients were added.
        self.http = httpx.AsyncClient(transport=transport or ShardedTransport(max_connections))
        # The calls to experts go over aiohttp (a fraction of httpx's CPU per call, see
        # experts/hop.py); a test's transport stands in for the network for them too.
        self.hop: Hop = (
            HttpxHop(self.http) if transport is not None else AiohttpHop(max_connections)
        )
        self.residency = ResidencyManager(self.engines, self.http, config.max_resident)
        self.scheduler = Scheduler(
            {e.name: e.max_concurrency for e in config.experts},
            self.residency,
            max_wait_s,
            scheduling,
        )
        self.client = ExpertClient(self.http, self.engines, timeouts, self.scheduler, self.hop)
        self.health = HealthBoard(self.engines, cooldown_s)
        self.supervise_every_s = supervise_every_s
        self._supervisor: asyncio.Task[None] | None = None
        self._coordinator: asyncio.Task[None] | None = None

    @property
    def names(self) -> list[str]:
        return list(self.engines)

    @property
    def load_board(self) -> LoadBoard:
        """Every expert's queue depth, in-flight calls and residency: `load_board.snapshot()`."""
        return self.scheduler

    def descriptors(self) -> list[ExpertDescriptor]:
        return [e.descriptor_for_router() for e in self.config.experts]

    async def start(self) -> None:
        """Start every engine (beyond `max_resident`, asleep); if one fails, stop the others and
        re-raise."""
        try:
            await self.residency.start()
        except BaseException:
            await self.stop()
            raise
        if any(e.restartable for e in self.engines.values()):
            self._supervisor = asyncio.create_task(self._supervise(), name="coe-supervisor")
        if self.residency.lease is not None:
            self.scheduler.claims = self.residency
            self._coordinator = asyncio.create_task(
                self.residency.coordinate(self._wake_for_replica),
                name="coe-residency",
            )

    async def _wake_for_replica(self, name: str) -> None:
        """Other replicas need `name`: queue for it here, so that the scheduler wakes it in its
        turn (a batch per wake, the wait bound) as it would for a call of this replica, and
        keep the slot (so it is not put back to sleep) until they have seen it awake."""
        try:
            async with self.scheduler.slot(name):
                await self.residency.hold_for_followers(name)
        except Exception as exc:
            log.warning("could not wake %s for another replica: %s", name, exc)

    async def _supervise(self) -> None:
        """Restart local expert processes that died, backing off while a restart keeps failing.

        Requests are routed around a dead expert at once (its engine is not alive); this brings
        it back so that one crash does not take an expert out until the gateway restarts.
        """
        backoff = dict.fromkeys(self.engines, self.supervise_every_s)
        next_try = dict.fromkeys(self.engines, 0.0)
        while True:
            await asyncio.sleep(self.supervise_every_s)
            for name, engine in self.engines.items():
                if (
                    not engine.restartable
                    or engine.asleep  # evicted on purpose; the scheduler wakes it
                    or engine.alive()
                    or time.monotonic() < next_try[name]
                ):
                    continue
                log.warning("expert %s is not running; restarting it", name)
                try:
                    await engine.start()
                except EngineStartError as exc:
                    backoff[name] = min(backoff[name] * 2, 60.0)
                    next_try[name] = time.monotonic() + backoff[name]
                    log.error(
                        "restart of %s failed (next try in %.0f s): %s", name, backoff[name], exc
                    )
                else:
                    backoff[name] = self.supervise_every_s
                    self.health.mark_ok(name)

    async def stop(self) -> None:
        """Stop the background tasks, the engines and the HTTP clients; every step is bounded
        by `shutdown_timeout_s` (`experts.shutdown`), so a task that lost its cancellation
        cannot hang the gateway's shutdown."""
        self.scheduler.close()
        timeout = self.shutdown_timeout_s
        if self._coordinator is not None:
            await cancel_and_wait(self._coordinator, timeout, "the residency coordinator")
            self._coordinator = None
        if self._supervisor is not None:
            await cancel_and_wait(self._supervisor, timeout, "the expert supervisor")
            self._supervisor = None
        await bounded(self.residency.release_lease(), timeout, "releasing the residency lease")
        engines = asyncio.gather(*(e.stop() for e in self.engines.values()), return_exceptions=True)
        await bounded(engines, timeout, "stopping the engines")
        await bounded(self.hop.aclose(), timeout, "closing the expert connections (hop)")
        await bounded(self.http.aclose(), timeout, "closing the HTTP client")

    async def __aenter__(self) -> LivePool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
