"""`POST /v1/chat/completions` and `POST /v1/route`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import ChatDep, GuardDep
from api.keys import CallerDep
from api.schemas import ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    request: ChatCompletionRequest, guard: GuardDep, key: CallerDep
) -> JSONResponse | StreamingResponse:
    """OpenAI chat completions; `model` is an expert's name, `coe-auto` or `coe-compose`."""
    if request.stream:
        return await guard.stream(request, key)
    return await guard.complete(request, key)


@router.post("/route")
async def route(request: ChatCompletionRequest, chat: ChatDep) -> dict[str, Any]:
    """The routing decision for a chat request, without calling any expert."""
    ranked, decision = await chat.plan(request)
    if decision is None:  # an expert named directly: nothing was routed
        return {"router": None, "chosen": ranked[0], "ranked": ranked, "experts": []}
    return decision.as_json()
