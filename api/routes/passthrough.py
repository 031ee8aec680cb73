"""`POST /v1/completions` and `POST /v1/embeddings`: to the expert named in `model`."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse

from api.deps import ChatDep
from api.keys import CallerDep
from api.passthrough import CompletionRequest, EmbeddingRequest, PassThrough

router = APIRouter(prefix="/v1", tags=["passthrough"])


@router.post("/completions", response_model=None)
async def completions(
    request: CompletionRequest, chat: ChatDep, key: CallerDep
) -> JSONResponse | StreamingResponse:
    """OpenAI (legacy) completions, streamed or not, from an expert that serves them."""
    return await PassThrough(chat).forward("completions", request, key)


@router.post("/embeddings", response_model=None)
async def embeddings(
    request: EmbeddingRequest, chat: ChatDep, key: CallerDep
) -> JSONResponse | StreamingResponse:
    """OpenAI embeddings from an expert whose pool entry lists `embeddings`."""
    return await PassThrough(chat).forward("embeddings", request, key)
