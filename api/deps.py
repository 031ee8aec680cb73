"""FastAPI dependencies: the shared objects the lifespan put on `app.state`.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread, a
thread hop per request for a dictionary lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.routing import RoutingService
from api.serving import ChatService
from api.settings import Settings
from experts.live import LivePool

__all__ = ["ChatDep", "PoolDep", "RoutingDep", "SettingsDep"]


async def _chat(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


async def _pool(request: Request) -> LivePool:
    pool: LivePool = request.app.state.pool
    return pool


async def _routing(request: Request) -> RoutingService:
    routing: RoutingService = request.app.state.routing
    return routing


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ChatDep = Annotated[ChatService, Depends(_chat)]
PoolDep = Annotated[LivePool, Depends(_pool)]
RoutingDep = Annotated[RoutingService, Depends(_routing)]
SettingsDep = Annotated[Settings, Depends(_settings)]
