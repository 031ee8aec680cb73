"""The chat-completions logic behind `POST /v1/chat/completions`.

Resolve the model (an expert's own name, or `coe-auto`), rank experts, call them with fallback,
and answer in OpenAI's shape plus what coe decided: under `coe` in the body (in the last chunk of a
stream) and as `x-coe-*` headers. Streams are passed through event by event.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.capabilities import check_expert
from api.errors import (
    APIError,
    ModelNotFound,
    NoExpertAvailable,
    Overloaded,
    RejectedByExpert,
    UpstreamTimeout,
    error_body,
)
from api.limits import completion_tokens, token_limit
from api.routing import RouteDecision, RoutingService
from api.schemas import ChatCompletionRequest
from api.settings import Settings
from api.sse import sse
from api.store import RequestRecord, Store
from experts.client import ExpertStream
from experts.errors import ExpertError
from experts.fallback import AllExpertsFailed, Attempt, ExpertRejected, call_with_fallback
from experts.live import LivePool
from experts.pool import VIRTUAL_MODELS
from router.query import estimate_tokens, max_prompt_tokens

if TYPE_CHECKING:
    from api.cascade import Cascade
    from api.sticky import Stickiness

__all__ = ["ChatService", "CoeMeta", "OnEnd"]

Json = dict[str, Any]

#: Called with a request's log record once it is logged (settles budgets, feeds metrics).
OnEnd = Callable[[RequestRecord], Awaitable[None]]


@dataclass
class CoeMeta:
    """The `coe` object of a response. Field names are an interface: extend, never rename."""

    router: str | None
    scores: dict[str, float]
    experts: list[str]
    tried: list[Attempt]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_estimated: bool = False
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    cache_hit: bool = False
    #: A cascade's calls, in order: `{expert, cost_usd, predicted_quality}` each.
    steps: list[Json] = field(default_factory=list)
    #: A learning router's episode (not sent): what feedback on this request updates.
    trace: Any = None
    #: coe-compose only: strategy, every sub-answer with its cost, failures (`api.compose`).
    compose: Json | None = None
    #: coe-auto in a conversation: its earlier expert and whether this turn stayed (`api.sticky`).
    sticky: Json | None = None

    def as_json(self) -> Json:
        meta: Json = {
            "experts": self.experts,
            "tried": [a.as_json() for a in self.tried],
            "router": self.router,
            "scores": {k: round(v, 6) for k, v in self.scores.items()},
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "estimated": self.usage_estimated,
            },
            "cost_usd": self.cost_usd,
            "latency_ms": round(self.latency_ms, 2),
            "cache_hit": self.cache_hit,
        }
        if self.steps:
            meta["steps"] = self.steps
        if self.compose is not None:
            meta["compose"] = self.compose
        if self.sticky is not None:
            meta["sticky"] = self.sticky
        return meta

    def headers(self, final: bool = True) -> dict[str, str]:
        headers = {
            "x-coe-experts": ",".join(self.experts),
            "x-coe-tried": ",".join(a.expert for a in self.tried),
            "x-coe-router": self.router or "",
            "x-coe-scores": json.dumps({k: round(v, 4) for k, v in self.scores.items()}),
        }
        if final:
            headers |= {
                "x-coe-cost-usd": f"{self.cost_usd:.10f}",
                "x-coe-latency-ms": f"{self.latency_ms:.1f}",
                "x-coe-prompt-tokens": str(self.prompt_tokens),
                "x-coe-completion-tokens": str(self.completion_tokens),
            }
        return headers


def _answer_text(answer: Json) -> str:
    return "".join(
        str((c.get("message") or {}).get("content") or "") for c in answer.get("choices", [])
    )


def _record(
    request: ChatCompletionRequest,
    request_id: str,
    arrived: float,
    meta: CoeMeta | None,
    status: int,
    error: str | None = None,
) -> RequestRecord:
    """The request log's entry for a request that ended with `status` (and `meta`, if routed)."""
    record = RequestRecord(
        ts=arrived,
        request_id=request_id,
        model=request.model,
        status=status,
        latency_ms=meta.latency_ms if meta else (time.time() - arrived) * 1000,
        stream=request.stream,
        error=error,
    )
    if meta is not None:
        record.experts = list(meta.experts)
        record.tried = [a.expert for a in meta.tried]
        record.failed = [a.expert for a in meta.tried if a.error is not None]
        record.router = meta.router
        record.scores = dict(meta.scores)
        record.prompt_tokens = meta.prompt_tokens
        record.completion_tokens = meta.completion_tokens
        record.usage_estimated = meta.usage_estimated
        record.cost_usd = meta.cost_usd
        record.ttft_ms = meta.ttft_ms
    return record


#: Ends a stream once (see `ChatService._ender`): called with the status and error to log.
Ended = Callable[[int, str | None], Awaitable[None]]


class _GuardedStream(StreamingResponse):
    """A streamed response that cannot hold an expert: the whole response, a slow reader
    included, is bounded by `deadline_s`; a body cut short is closed (and so logged) at once,
    not when the garbage collector finds it; and `abandoned` runs when the body was never read
    (the client went away before the first byte)."""

    def __init__(
        self,
        body: AsyncGenerator[bytes, None],
        abandoned: Callable[[], Awaitable[None]],
        deadline_s: float,
        **kwargs: Any,
    ) -> None:
        self._body, self._abandoned, self._deadline_s = body, abandoned, deadline_s
        self._started = False
        super().__init__(self._read(), **kwargs)

    async def _read(self) -> AsyncGenerator[bytes, None]:
        self._started = True
        try:
            async for chunk in self._body:
                yield chunk
        finally:  # closing this closes what it reads (Starlette, a test)
            await self._body.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            with anyio.move_on_after(self._deadline_s):
                await super().__call__(scope, receive, send)
        finally:
            await self._body.aclose()
            if not self._started:
                await self._abandoned()


class ChatService:
    def __init__(
        self, pool: LivePool, routing: RoutingService, settings: Settings, store: Store
    ) -> None:
        self.pool = pool
        self.routing = routing
        self.settings = settings
        self.store = store
        self._finishing: set[asyncio.Task[None]] = set()
        self.cascade: Cascade | None = None  # set by the app when a learning router is loaded
        self.sticky: Stickiness | None = None  # set by the app: coe-auto conversations stay put
        from api.compose import ComposeService  # it builds on this module's CoeMeta

        self.composer = ComposeService(pool, routing, settings)

    async def _log(
        self,
        record: RequestRecord,
        request: ChatCompletionRequest,
        key_id: str | None = None,
        on_end: OnEnd | None = None,
    ) -> None:
        """Log `record` (and run `on_end`) in a task of its own: a stream whose client went away
        ends inside a cancelled scope, where an await of ours (a Redis round trip, the budget
        settling) may be cancelled; the shielded task finishes regardless."""
        if self.settings.log_prompts:
            record.prompt = json.dumps([m.model_dump() for m in request.messages])
        record.key_id = key_id

        async def finish() -> None:
            await self.store.log_request(record)
            if on_end is not None:
                await on_end(record)

        task = asyncio.create_task(finish(), name=f"coe-log-{record.request_id}")
        self._finishing.add(task)
        task.add_done_callback(self._finishing.discard)
        await asyncio.shield(task)

    async def _log_failure(
        self,
        request: ChatCompletionRequest,
        request_id: str,
        arrived: float,
        exc: APIError,
        key_id: str | None = None,
        on_end: OnEnd | None = None,
    ) -> None:
        tried = [str(t.get("expert")) for t in (exc.extra or {}).get("tried", [])]
        record = _record(request, request_id, arrived, None, exc.status_code, exc.message)
        record.tried = tried
        record.failed = [
            str(t.get("expert")) for t in (exc.extra or {}).get("tried", []) if t.get("error")
        ]
        await self._log(record, request, key_id, on_end)

    def model_names(self) -> list[str]:
        return [*self.pool.names, *VIRTUAL_MODELS]

    async def plan(self, request: ChatCompletionRequest) -> tuple[list[str], RouteDecision | None]:
        """Experts to try, in order, and the routing decision when a router made one."""
        if request.model in self.pool.engines:
            check_expert(self.routing.experts[request.model], request)
            return [request.model], None
        if request.model not in VIRTUAL_MODELS:
            raise ModelNotFound(
                f"model {request.model!r} does not exist; valid models: "
                f"{', '.join(self.model_names())}",
                param="model",
            )
        decision = await self.routing.route(request, self.pool.health.down())
        if self.sticky is not None:
            decision = await self.sticky.apply(request, decision)
        return decision.ranked, decision

    def _meta(
        self, decision: RouteDecision | None, expert: str | None, attempts: list[Attempt]
    ) -> CoeMeta:
        return CoeMeta(
            router=decision.router if decision else None,
            scores=decision.scores if decision else {},
            experts=[expert] if expert else [],
            tried=attempts,
            sticky=decision.sticky if decision else None,
        )

    def _for(self, expert: str, body: Json, request: ChatCompletionRequest) -> Json:
        """`body` as `expert` gets it: `max_tokens` within its context and `coe.max_cost_usd`
        (what `api.limits` reserved for the call)."""
        cap = request.coe.max_cost_usd if request.coe else None
        descriptor = self.routing.experts[expert]
        prompt = max_prompt_tokens(body["messages"])
        limit = token_limit(descriptor, request.completion_limit, int(body["max_tokens"]))
        tokens = completion_tokens(descriptor, limit, prompt, cap)
        return {**body, "max_tokens": tokens}

    def _settle(
        self,
        meta: CoeMeta,
        expert: str,
        usage: Json | None,
        started: float,
        fallback_completion_tokens: int,
        prompt_estimate: int,
    ) -> None:
        if usage and "prompt_tokens" in usage:
            meta.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            meta.completion_tokens = int(usage.get("completion_tokens") or 0)
        else:
            meta.prompt_tokens, meta.completion_tokens = prompt_estimate, fallback_completion_tokens
            meta.usage_estimated = True
        descriptor = self.routing.experts[expert]  # built once at start, not per request
        meta.cost_usd = round(descriptor.cost_usd(meta.prompt_tokens, meta.completion_tokens), 12)
        meta.latency_ms = (time.perf_counter() - started) * 1000

    def _failure(self, exc: AllExpertsFailed | ExpertRejected) -> APIError:
        tried = [a.as_json() for a in exc.attempts]
        if isinstance(exc, ExpertRejected):
            status = getattr(exc.error, "status_code", 400)
            return RejectedByExpert(
                f"the expert rejected the request: {exc.error}", status, tried=tried
            )
        if exc.attempts and all(a.shed for a in exc.attempts):
            return Overloaded(
                f"every expert tried is overloaded; retry later ({exc})",
                min(self.settings.queue_timeout_s, 30.0),
                tried=tried,
            )
        if exc.timed_out:
            return UpstreamTimeout(str(exc), tried=tried)
        return NoExpertAvailable(str(exc), tried=tried)

    async def complete(
        self,
        request: ChatCompletionRequest,
        key_id: str | None = None,
        on_end: OnEnd | None = None,
    ) -> JSONResponse:
        """Answer `request`; `key_id` goes into its log record, `on_end` runs once it is logged."""
        arrived, request_id = time.time(), f"chatcmpl-{uuid.uuid4().hex}"
        try:
            answer, meta = await self._complete(request)
        except APIError as exc:
            await self._log_failure(request, request_id, arrived, exc, key_id, on_end)
            raise
        record = _record(request, request_id, arrived, meta, 200)
        if self.sticky is not None and request.model == "coe-auto" and meta.experts:
            await self.sticky.remember(request, meta.experts[-1])
        if self.settings.log_prompts:
            record.answer = _answer_text(answer)
        await self._log(record, request, key_id, on_end)
        if self.cascade is not None:
            self.cascade.served(request_id, meta)
        answer |= {"id": request_id, "coe": meta.as_json()}
        headers = meta.headers() | {"x-request-id": request_id}
        return JSONResponse(answer, headers=headers)

    async def _complete(self, request: ChatCompletionRequest) -> tuple[Json, CoeMeta]:
        if request.model == "coe-compose":
            return await self.composer.complete(request)
        started = time.perf_counter()
        ranked, decision = await self.plan(request)
        if self.cascade is not None and decision and self.cascade.applies(request, decision):
            return await self.cascade.complete(request, decision, started)
        body = request.upstream_body(self.settings.default_max_tokens)
        try:
            expert, answer, attempts = await call_with_fallback(
                ranked,
                lambda e: self.pool.client.complete(e, self._for(e, body, request)),
                self.pool.health,
                self.settings.max_attempts,
            )
        except (AllExpertsFailed, ExpertRejected) as exc:
            raise self._failure(exc) from exc
        meta = self._meta(decision, expert, attempts)
        self._settle(
            meta,
            expert,
            answer.get("usage"),
            started,
            max(1, len(_answer_text(answer)) // 4),
            estimate_tokens(body["messages"]),
        )
        answer["model"] = expert
        return answer, meta

    async def stream(
        self,
        request: ChatCompletionRequest,
        key_id: str | None = None,
        on_end: OnEnd | None = None,
    ) -> StreamingResponse:
        """Stream the answer to `request`; `key_id` and `on_end` as for `complete`."""
        arrived, request_id = time.time(), f"chatcmpl-{uuid.uuid4().hex}"
        started = time.perf_counter()
        if request.model == "coe-compose":
            return await self._compose_stream(request, request_id, arrived, key_id, on_end)
        try:
            ranked, decision = await self.plan(request)
            if self.cascade is not None and decision and self.cascade.applies(request, decision):
                meta, events = await self.cascade.stream(request, decision, request_id, started)
                ended = self._ender(events, request, request_id, arrived, meta, key_id, on_end)
                return await self._respond(events, ended, meta.headers(final=False) | {
                    "x-request-id": request_id
                })  # fmt: skip
            body = request.upstream_body(self.settings.default_max_tokens)
            body["stream_options"] = {"include_usage": True}
            try:
                expert, upstream, attempts = await call_with_fallback(
                    ranked,
                    lambda e: self.pool.client.open_stream(e, self._for(e, body, request)),
                    self.pool.health,
                    self.settings.max_attempts,
                )
            except (AllExpertsFailed, ExpertRejected) as exc:
                raise self._failure(exc) from exc
        except APIError as exc:
            await self._log_failure(request, request_id, arrived, exc, key_id, on_end)
            raise
        meta = self._meta(decision, expert, attempts)
        if self.sticky is not None and decision is not None:
            await self.sticky.remember(request, expert)
        meta.ttft_ms = (time.perf_counter() - started) * 1000
        prompt_estimate = estimate_tokens(body["messages"])
        events = self._relay(upstream, request, meta, request_id, started, prompt_estimate)
        ended = self._ender(events, request, request_id, arrived, meta, key_id, on_end)
        return await self._respond(events, ended, meta.headers(final=False) | {
            "x-request-id": request_id
        })  # fmt: skip

    async def _compose_stream(
        self,
        request: ChatCompletionRequest,
        request_id: str,
        arrived: float,
        key_id: str | None,
        on_end: OnEnd | None,
    ) -> StreamingResponse:
        try:
            meta, events = await self.composer.stream(request, request_id)
        except APIError as exc:
            await self._log_failure(request, request_id, arrived, exc, key_id, on_end)
            raise
        ended = self._ender(events, request, request_id, arrived, meta, key_id, on_end)
        return await self._respond(events, ended, meta.headers(final=False) | {
            "x-request-id": request_id
        })  # fmt: skip

    def _ender(
        self,
        events: AsyncGenerator[bytes, None],
        request: ChatCompletionRequest,
        request_id: str,
        arrived: float,
        meta: CoeMeta,
        key_id: str | None,
        on_end: OnEnd | None,
    ) -> Ended:
        """What ends a stream, once, however it ended: close `events` (its `finally` frees the
        expert's slot and settles `meta` to what was streamed), then log with `status`."""

        async def ended(status: int, error: str | None) -> None:
            try:
                await events.aclose()
            finally:  # even when a cancelled scope cancels that await
                record = _record(request, request_id, arrived, meta, status, error)
                await self._log(record, request, key_id, on_end)

        return ended

    async def _respond(
        self, events: AsyncGenerator[bytes, None], ended: Ended, headers: dict[str, str]
    ) -> StreamingResponse:
        """The response for `events`, started here: the expert's first event has arrived (it
        is the fallback point), and a started generator's `finally` runs on `aclose()`, so the
        expert is freed even if the client leaves before the body is read."""
        first = await anext(events, None)
        return _GuardedStream(
            self._logged(first, events, ended),
            lambda: ended(499, "the client went away before the answer started"),
            self.settings.stream_deadline_s,
            media_type="text/event-stream",
            headers=headers | {"cache-control": "no-cache"},
        )

    async def _logged(
        self, first: bytes | None, events: AsyncGenerator[bytes, None], ended: Ended
    ) -> AsyncGenerator[bytes, None]:
        """Relay `first` and `events`, then end the stream however it ended (a client that goes
        away mid-answer is logged as 499, nginx's "client closed request")."""
        error: str | None = "the client went away mid-answer"
        status = 499
        try:
            while first is not None:
                if first.startswith(b'data: {"error"'):
                    error, status = first[6:].decode(errors="replace").strip()[:500], 200
                yield first
                first = await anext(events, None)
            if status == 499:
                error, status = None, 200
        finally:
            await ended(status, error)

    async def _relay(
        self,
        upstream: ExpertStream,
        request: ChatCompletionRequest,
        meta: CoeMeta,
        request_id: str,
        started: float,
        prompt_estimate: int,
    ) -> AsyncGenerator[bytes, None]:
        """Pass the expert's chunks on, then the final chunk with `coe`. However the stream
        ends (done, the expert failed, the client went away), `meta` is settled to what was
        streamed: the prompt and the chunks sent are paid for."""
        expert = upstream.expert
        usage: Json | None = None
        pieces = 0  # content-bearing chunks: one token each from llama.cpp and vLLM
        created = int(time.time())
        try:
            async for chunk in upstream:
                if "error" in chunk:
                    raise ExpertError(expert, str(chunk["error"]))
                usage = chunk.pop("usage", None) or usage
                created = chunk.get("created", created)
                if not chunk.get("choices"):
                    continue  # upstream's usage-only chunk: folded into our final chunk
                pieces += any(  # a piece of text, or of a tool call's arguments
                    (d := c.get("delta") or {}).get("content") or d.get("tool_calls")
                    for c in chunk["choices"]
                )
                chunk |= {"id": request_id, "model": expert}
                yield sse(chunk)
        except ExpertError as exc:
            self.pool.health.mark_failed(expert, exc.message)
            yield sse(
                error_body(
                    f"the expert failed mid-answer: {exc}", "server_error", code="expert_failed"
                )
            )
            yield b"data: [DONE]\n\n"
            return
        finally:
            self._settle(meta, expert, usage, started, pieces, prompt_estimate)
            await upstream.aclose()
        final: Json = {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": expert,
            "choices": [],
            "coe": meta.as_json(),
        }
        if request.include_usage:
            final["usage"] = {
                "prompt_tokens": meta.prompt_tokens,
                "completion_tokens": meta.completion_tokens,
                "total_tokens": meta.prompt_tokens + meta.completion_tokens,
            }
        yield sse(final)
        yield b"data: [DONE]\n\n"
