"""`POST /v1/completions` and `POST /v1/embeddings`, passed straight to the expert named in `model`.

There is no routing here: `model` must be an expert whose pool entry lists the endpoint
(`endpoints`; chat and completions by default, embeddings only when listed). Anything else is
OpenAI's 404 (`model_not_found`) naming the models that do serve it. Otherwise these requests go
through what a chat request goes through: the key (KeyAuth), its limits and budget (the
reservation takes the prompt and the completion limit, settled at the real cost), the request
log, the metrics, the expert's queue and residency, and the trace.

    curl -d '{"model": "smollm2-135m", "prompt": "Once upon a time", "max_tokens": 16}' \\
         http://127.0.0.1:8000/v1/completions
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from api.errors import (
    APIError,
    ModelNotFound,
    NoExpertAvailable,
    RejectedByExpert,
    UpstreamTimeout,
    error_body,
)
from api.pipeline import ChatPipeline
from api.schemas import ChatCompletionRequest, PromptMessage
from api.sse import sse
from api.store import ApiKey, RequestRecord
from experts.client import ExpertStream
from experts.errors import ExpertError, ExpertTimeout
from experts.pool import VIRTUAL_MODELS

__all__ = ["CompletionRequest", "EmbeddingRequest", "PassThrough"]

Json = dict[str, Any]
Endpoint = Literal["completions", "embeddings"]
Text = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(BaseModel):
    """OpenAI's legacy completions; every other field goes to the expert unchanged."""

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1)]
    prompt: Text
    stream: bool = False
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1, le=1, description="coe returns one choice")] | None = None


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(min_length=1)]
    input: Text


def _text(value: Text) -> str:
    """The request's text, for the limiter's token estimate (token ids count ~4 chars each)."""
    if isinstance(value, str):
        return value
    parts = [p if isinstance(p, str) else "xxxx" * (len(p) if isinstance(p, list) else 1)
             for p in value]  # fmt: skip
    return "\n".join(parts)


class PassThrough:
    def __init__(self, chat: ChatPipeline) -> None:
        self.chat = chat

    def serving(self, endpoint: Endpoint) -> list[str]:
        """The experts that serve `endpoint`."""
        engines = self.chat.pool.engines
        return [n for n, e in engines.items() if endpoint in e.config.served_endpoints]

    def _expert(self, endpoint: Endpoint, model: str) -> str:
        serving = self.serving(endpoint)
        if model in serving:
            return model
        known = model in self.chat.pool.engines or model in VIRTUAL_MODELS
        why = "does not serve" if known else "does not exist for"
        raise ModelNotFound(
            f"model {model!r} {why} /v1/{endpoint}; models that do: "
            f"{', '.join(serving) or 'none in this pool (a pool entry lists it under endpoints)'}",
            param="model",
        )

    async def forward(
        self, endpoint: Endpoint, request: CompletionRequest | EmbeddingRequest, key: ApiKey | None
    ) -> JSONResponse | StreamingResponse:
        expert = self._expert(endpoint, request.model)
        text = _text(request.prompt if isinstance(request, CompletionRequest) else request.input)
        limit = getattr(request, "max_tokens", None) or (
            1 if endpoint == "embeddings" else self.chat.settings.default_max_tokens
        )
        stream = bool(getattr(request, "stream", False))
        # The limiter and the request log speak chat: the same text as one user turn.
        as_chat = ChatCompletionRequest(
            model=expert,
            messages=[PromptMessage(role="user", content=text)],
            max_tokens=limit,
            stream=stream,
        )
        charge = await self.chat.admit(key, as_chat)
        on_end = self.chat.on_end(charge)
        arrived, started = time.time(), time.perf_counter()

        async def log(record: RequestRecord) -> None:  # shielded: it must end even if cancelled
            await self.chat.log.write(record, as_chat, record.key_id, on_end)

        record = RequestRecord(
            ts=arrived,
            request_id=f"{'cmpl' if endpoint == 'completions' else 'embd'}-{uuid.uuid4().hex}",
            model=request.model,
            status=200,
            latency_ms=0.0,
            stream=stream,
            tried=[expert],
            key_id=key.id if key else None,
            prompt_tokens=max(1, len(text) // 4),  # until the expert reports its count
        )
        body = request.model_dump(exclude_none=True, exclude={"model", "stream"})
        if endpoint == "completions":
            body["max_tokens"] = limit
        path = f"/{endpoint}"
        try:
            if stream:
                body["stream_options"] = {"include_usage": True}
                upstream = await self.chat.pool.client.open_stream(expert, body, path)
            else:
                answer = await self.chat.pool.client.complete(expert, body, path)
        except ExpertError as exc:
            failure = self._failure(exc)
            record.status, record.error = failure.status_code, failure.message
            record.failed, record.latency_ms = [expert], (time.perf_counter() - started) * 1000
            await log(record)
            raise failure from exc
        self.chat.pool.health.mark_ok(expert)
        record.experts = [expert]
        headers = {"x-request-id": record.request_id, "x-coe-experts": expert}
        if stream:
            record.ttft_ms = (time.perf_counter() - started) * 1000
            events = self._relay(upstream, record, started, log)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        self._settle(record, answer.get("usage"), started, len(str(answer.get("choices"))) // 4)
        await log(record)
        answer["model"] = expert
        answer["coe"] = {"experts": [expert], "cost_usd": record.cost_usd}
        return JSONResponse(answer, headers=headers | {"x-coe-cost-usd": f"{record.cost_usd:.10f}"})

    def _failure(self, exc: ExpertError) -> APIError:
        tried = [{"expert": exc.expert, "error": exc.message}]
        if not exc.retryable:
            status = getattr(exc, "status_code", 400)
            return RejectedByExpert(f"the expert rejected the request: {exc}", status, tried=tried)
        self.chat.pool.health.mark_failed(exc.expert, exc.message)
        if isinstance(exc, ExpertTimeout):
            return UpstreamTimeout(f"{exc.expert} timed out: {exc.message}", tried=tried)
        return NoExpertAvailable(f"{exc.expert} could not answer: {exc.message}", tried=tried)

    def _settle(
        self, record: RequestRecord, usage: Json | None, started: float, completion: int
    ) -> None:
        """Tokens and cost from the expert's usage; else the prompt estimate and `completion`."""
        if usage and "prompt_tokens" in usage:
            record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            record.completion_tokens = int(usage.get("completion_tokens") or 0)
        else:
            record.completion_tokens, record.usage_estimated = completion, True
        expert = self.chat.planner.routing.experts[record.tried[0]]
        record.cost_usd = round(expert.cost_usd(record.prompt_tokens, record.completion_tokens), 12)
        record.latency_ms = (time.perf_counter() - started) * 1000

    async def _relay(
        self,
        upstream: ExpertStream,
        record: RequestRecord,
        started: float,
        log: Callable[[RequestRecord], Awaitable[None]],
    ) -> AsyncIterator[bytes]:
        """Pass the expert's chunks on (ids rewritten), then log however the stream ended."""
        usage: Json | None = None
        pieces = 0
        record.status, record.error = 499, "the client went away mid-answer"
        try:
            try:
                async for chunk in upstream:
                    if "error" in chunk:
                        raise ExpertError(upstream.expert, str(chunk["error"])[:500])
                    usage = chunk.pop("usage", None) or usage
                    if chunk.get("choices"):
                        pieces += 1
                        yield sse(chunk | {"id": record.request_id, "model": upstream.expert})
            except ExpertError as exc:
                self.chat.pool.health.mark_failed(upstream.expert, exc.message)
                record.status, record.error = 200, exc.message
                message = f"the expert failed mid-answer: {exc.message}"
                yield sse(error_body(message, "server_error", code="expert_failed"))
            else:
                record.status, record.error = 200, None
            yield b"data: [DONE]\n\n"
        finally:
            try:
                await upstream.aclose()
            finally:
                self._settle(record, usage, started, pieces)
                await log(record)
