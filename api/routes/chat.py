"""`POST /v1/chat/completions` and `POST /v1/route`.

The endpoints' work is in `answer` and `decision`, which `api.fastlane` also calls: it serves
these two routes without FastAPI's per-request machinery, and FastAPI serves them when the fast
lane hands a request on (a body that does not validate, another content type).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import ChatDep
from api.keys import CallerDep
from api.pipeline import ChatPipeline
from api.schemas import ChatCompletionRequest
from api.store import ApiKey

__all__ = ["answer", "decision", "router"]

router = APIRouter(prefix="/v1", tags=["chat"])


async def answer(
    chat: ChatPipeline, request: ChatCompletionRequest, key: ApiKey | None
) -> JSONResponse | StreamingResponse:
    """The chat completion, whole or streamed as the request asks."""
    if request.stream:
        return await chat.stream(request, key)
    return await chat.complete(request, key)


async def decision(chat: ChatPipeline, request: ChatCompletionRequest) -> dict[str, Any]:
    """The routing decision's JSON (no expert is called)."""
    plan = await chat.planner.plan(request)
    if plan.decision is None:  # an expert named directly: nothing was routed
        return {"router": None, "chosen": plan.ranked[0], "ranked": plan.ranked, "experts": []}
    return plan.decision.as_json()


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    request: ChatCompletionRequest, chat: ChatDep, key: CallerDep
) -> JSONResponse | StreamingResponse:
    """OpenAI chat completions; `model` is an expert's name, `coe-auto` or `coe-compose`."""
    return await answer(chat, request, key)


@router.post("/route")
async def route(request: ChatCompletionRequest, chat: ChatDep) -> dict[str, Any]:
    """The routing decision for a chat request, without calling any expert."""
    return await decision(chat, request)
