"""FastAPI dependencies: the shared objects the lifespan put on `app.state`.

They are `async def` on purpose: FastAPI runs plain `def` dependencies in a worker thread, a
thread hop per request for a dictionary lookup.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.metrics import Metrics
from api.pipeline import ChatPipeline
from api.routing import RoutingService
from api.settings import Settings
from api.store import Store
from experts.live import LivePool

__all__ = [
    "ChatDep",
    "MetricsDep",
    "PoolDep",
    "RoutingDep",
    "SettingsDep",
    "StoreDep",
]


async def _chat(request: Request) -> ChatPipeline:
    pipeline: ChatPipeline = request.app.state.chat
    return pipeline


async def _pool(request: Request) -> LivePool:
    pool: LivePool = request.app.state.pool
    return pool


async def _routing(request: Request) -> RoutingService:
    routing: RoutingService = request.app.state.routing
    return routing


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


ChatDep = Annotated[ChatPipeline, Depends(_chat)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
StoreDep = Annotated[Store, Depends(_store)]
PoolDep = Annotated[LivePool, Depends(_pool)]
RoutingDep = Annotated[RoutingService, Depends(_routing)]
SettingsDep = Annotated[Settings, Depends(_settings)]
