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
    """200 when at least one expert answers (or sleeps and can be woken), else 503; per-expert
    status, load and residency either way, and the store's (a Redis outage is reported, not
    fatal: memory stands in)."""
    statuses = await pool.health.probe(pool.http)
    load = pool.load_board.snapshot()
    experts: dict[str, Any] = {
        name: {
            "status": status,
            "in_flight": load[name].in_flight,
            "queued": load[name].queued,
            "waiting": load[name].queued,  # the name /ready had before the scheduler
            "resident": load[name].resident,
            "loads": load[name].loads,
        }
        for name, status in statuses.items()
    }
    ok = any(s in ("ok", "asleep") for s in statuses.values())  # asleep experts wake on demand
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "experts": experts, "store": store.status()},
        status_code=200 if ok else 503,
    )
