"""`POST /v1/chat/completions` and `POST /v1/route`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import ChatDep
from api.keys import CallerDep
from api.schemas import ChatCompletionRequest

router = APIRouter(prefix="/v1", tags=["chat"])


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    request: ChatCompletionRequest, chat: ChatDep, key: CallerDep
) -> JSONResponse | StreamingResponse:
    """OpenAI chat completions; `model` is an expert's name, `coe-auto` or `coe-compose`."""
    if request.stream:
        return await chat.stream(request, key)
    return await chat.complete(request, key)


@router.post("/route")
async def route(request: ChatCompletionRequest, chat: ChatDep) -> dict[str, Any]:
    """The routing decision for a chat request, without calling any expert."""
    plan = await chat.planner.plan(request)
    if plan.decision is None:  # an expert named directly: nothing was routed
        return {"router": None, "chosen": plan.ranked[0], "ranked": plan.ranked, "experts": []}
    return plan.decision.as_json()
