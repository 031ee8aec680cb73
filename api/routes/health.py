"""`GET /health` (the process is alive) and `GET /ready` (which experts answer now)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import PoolDep, StoreDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(pool: PoolDep, store: StoreDep) -> JSONResponse:
    """200 when at least one expert answers, else 503; per-expert status and load either way,
    and the store's (a Redis outage is reported, not fatal: memory stands in)."""
    statuses = await pool.health.probe(pool.http)
    experts: dict[str, Any] = {
        name: {
            "status": status,
            "in_flight": pool.client.in_flight(name),
            "waiting": pool.client.waiting[name],
        }
        for name, status in statuses.items()
    }
    ok = any(s == "ok" for s in statuses.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "experts": experts, "store": store.status()},
        status_code=200 if ok else 503,
    )
