"""FastAPI dependencies: the shared objects the lifespan put on `app.state`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.routing import RoutingService
from api.serving import ChatService
from api.settings import Settings
from experts.live import LivePool

__all__ = ["ChatDep", "PoolDep", "RoutingDep", "SettingsDep"]


def _chat(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat
    return service


def _pool(request: Request) -> LivePool:
    pool: LivePool = request.app.state.pool
    return pool


def _routing(request: Request) -> RoutingService:
    routing: RoutingService = request.app.state.routing
    return routing


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ChatDep = Annotated[ChatService, Depends(_chat)]
PoolDep = Annotated[LivePool, Depends(_pool)]
RoutingDep = Annotated[RoutingService, Depends(_routing)]
SettingsDep = Annotated[Settings, Depends(_settings)]
