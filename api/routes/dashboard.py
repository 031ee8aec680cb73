"""The dashboard: `GET /dashboard` (the page) and its JSON figures under `/dashboard/api/*`.

Two routers on purpose. `router` carries every figure and is the one to guard: an admin-key
dependency goes on it in one line (`app.include_router(router, dependencies=[...])`). `page`
serves only the static shell (HTML, JS, CSS, the vendored chart library), which holds no data and
must load in a browser that cannot attach a bearer key to a navigation; the page's script sends
the key it is given with every figure request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel

from api.dashboard import DashboardService
from api.dashboard.aggregate import WINDOWS
from api.dashboard.models import (
    CostReport,
    EvalReports,
    LatencyReport,
    QualityReport,
    RoutingReport,
    Summary,
    TrafficReport,
    Window,
)
from api.deps import SettingsDep

__all__ = ["STATIC", "page", "router"]

STATIC = Path(__file__).resolve().parent.parent / "dashboard" / "static"

router = APIRouter(prefix="/dashboard/api", tags=["dashboard"])
page = APIRouter(prefix="/dashboard", tags=["dashboard"])


async def _service(request: Request) -> DashboardService:
    return DashboardService.from_state(request.app.state)


DashboardDep = Annotated[DashboardService, Depends(_service)]
WindowQuery = Annotated[Window, Query(description="time window the figures cover")]


class DashboardConfig(BaseModel):
    refresh_s: float
    windows: list[str]
    reports_dir: str | None


@router.get("/config")
async def config(settings: SettingsDep) -> DashboardConfig:
    """How the page should poll, and the windows it may ask for."""
    reports = str(settings.reports_dir) if settings.reports_dir else None
    return DashboardConfig(
        refresh_s=settings.dashboard_refresh_s, windows=list(WINDOWS), reports_dir=reports
    )


@router.get("/summary")
async def summary(dashboard: DashboardDep, window: WindowQuery = "1h") -> Summary:
    """Headline figures: requests, error and fallback rate, spend, latency, feedback, experts up."""
    return await dashboard.summary(window)


@router.get("/traffic")
async def traffic(dashboard: DashboardDep, window: WindowQuery = "1h") -> TrafficReport:
    """Requests per minute by expert and by requested model; error and fallback rate."""
    return await dashboard.traffic(window)


@router.get("/cost")
async def cost(dashboard: DashboardDep, window: WindowQuery = "1h") -> CostReport:
    """USD per hour and per request by expert and by API key; budget used per key."""
    return await dashboard.cost(window)


@router.get("/latency")
async def latency(dashboard: DashboardDep, window: WindowQuery = "1h") -> LatencyReport:
    """p50/p95 latency and time to first token by expert, and latency over time."""
    return await dashboard.latency(window)


@router.get("/routing")
async def routing(dashboard: DashboardDep, window: WindowQuery = "1h") -> RoutingReport:
    """Each expert's share of requests over time, cache hit rate, queue depth and residency."""
    return await dashboard.routing(window)


@router.get("/quality")
async def quality(dashboard: DashboardDep, window: WindowQuery = "1h") -> QualityReport:
    """Feedback scores (`POST /v1/feedback`) over time and per expert."""
    return await dashboard.quality(window)


@router.get("/evaluations")
async def evaluations(dashboard: DashboardDep) -> EvalReports:
    """The `coe eval` reports under COE_REPORTS_DIR: cost-quality curves and metric tables."""
    return await dashboard.evaluations()


@page.get("", response_class=HTMLResponse)
async def dashboard_page() -> FileResponse:
    """The dashboard page (it polls the `/dashboard/api/*` figures)."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@page.get("/static/{path:path}", include_in_schema=False)
async def static_file(path: str) -> FileResponse:
    target = (STATIC / path).resolve()
    if not target.is_relative_to(STATIC) or not target.is_file():
        raise HTTPException(status_code=404, detail=f"no dashboard file {path!r}")
    return FileResponse(target)
