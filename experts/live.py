"""A running pool: its engines started, one shared HTTP client, and the health board.

Created and closed by the gateway's lifespan (never at import)::

    async with LivePool(load_pool("config/local.yaml"), work_dir) as pool:
        answer = await pool.client.complete("smollm2-135m", body)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

import httpx

from experts.client import ExpertClient, Timeouts
from experts.engines import Engine, make_engine
from experts.health import HealthBoard
from experts.pool import PoolConfig
from router.descriptor import ExpertDescriptor

__all__ = ["LivePool"]


class LivePool:
    def __init__(
        self,
        config: PoolConfig,
        work_dir: Path,
        timeouts: Timeouts | None = None,
        cooldown_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 512,
    ) -> None:
        self.config = config
        self.engines: dict[str, Engine] = {e.name: make_engine(e, work_dir) for e in config.experts}
        self.http = httpx.AsyncClient(
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=64),
        )
        self.client = ExpertClient(self.http, self.engines, timeouts)
        self.health = HealthBoard(self.engines, cooldown_s)

    @property
    def names(self) -> list[str]:
        return list(self.engines)

    def descriptors(self) -> list[ExpertDescriptor]:
        return [e.descriptor_for_router() for e in self.config.experts]

    async def start(self) -> None:
        """Start every engine; if one fails, stop the others and re-raise."""
        results = await asyncio.gather(
            *(e.start() for e in self.engines.values()), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.stop()
            raise errors[0]

    async def stop(self) -> None:
        await asyncio.gather(*(e.stop() for e in self.engines.values()), return_exceptions=True)
        await self.http.aclose()

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
