"""`GET /v1/models`: every expert of the pool plus the virtual models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import PoolDep
from experts.pool import VIRTUAL_MODELS

router = APIRouter(prefix="/v1", tags=["models"])


@router.get("/models")
async def list_models(pool: PoolDep) -> dict[str, Any]:
    experts = [
        {
            "id": e.name,
            "object": "model",
            "created": 0,
            "owned_by": f"coe:{e.engine}",
            "coe": {
                "engine": e.engine,
                "input_price": e.input_price,
                "output_price": e.output_price,
                "context_length": e.context_length,
                "descriptor": e.descriptor,
                "skills": e.skills,
                "tools": e.supports_tools,
                "modalities": e.modalities,
                "endpoints": list(e.served_endpoints),
            },
        }
        for e in pool.config.experts
    ]
    virtual = [
        {"id": n, "object": "model", "created": 0, "owned_by": "coe"} for n in VIRTUAL_MODELS
    ]
    return {"object": "list", "data": experts + virtual}
