"""The single executor: a plan of kind `single` runs here. Its experts are tried in the plan's
order with fallback (`experts.fallback`); the answer goes back in OpenAI's shape, a stream is
passed through event by event. Routing, admission, the cache and the log are other steps'
(`api.pipeline`); this module only calls experts and says what they cost in a `CoeMeta`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from api.errors import (
    APIError,
    NoExpertAvailable,
    Overloaded,
    RejectedByExpert,
    UpstreamTimeout,
)
from api.meta import CoeMeta, Json, answer_text
from api.plan import Plan
from api.routing import RouteDecision, RoutingService
from api.schemas import ChatCompletionRequest
from api.settings import Settings
from api.sse import closing, failed, sse
from api.tokens import completion_tokens, token_limit
from experts.client import ExpertStream
from experts.errors import ExpertError
from experts.fallback import AllExpertsFailed, Attempt, ExpertRejected, call_with_fallback
from experts.live import LivePool
from router.query import estimate_tokens, max_prompt_tokens

__all__ = ["SingleExpert"]


class SingleExpert:
    """One expert answers: the plan's first that does, after any that fail (retryably)."""

    def __init__(self, pool: LivePool, routing: RoutingService, settings: Settings) -> None:
        self.pool = pool
        self.routing = routing
        self.settings = settings

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
        (what the plan's worst case reserved for the call)."""
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

    async def complete(self, plan: Plan, started: float) -> tuple[Json, CoeMeta]:
        """The answer (`model` set to the expert that gave it) and its `CoeMeta`."""
        request = plan.request
        body = request.upstream_body(self.settings.default_max_tokens)
        try:
            expert, answer, attempts = await call_with_fallback(
                plan.ranked,
                lambda e: self.pool.client.complete(e, self._for(e, body, request)),
                self.pool.health,
                self.settings.max_attempts,
            )
        except (AllExpertsFailed, ExpertRejected) as exc:
            raise self._failure(exc) from exc
        meta = self._meta(plan.decision, expert, attempts)
        self._settle(
            meta,
            expert,
            answer.get("usage"),
            started,
            max(1, len(answer_text(answer)) // 4),
            estimate_tokens(body["messages"]),
        )
        answer["model"] = expert
        return answer, meta

    async def stream(
        self, plan: Plan, request_id: str, started: float
    ) -> tuple[CoeMeta, AsyncGenerator[bytes, None]]:
        """Open the stream (falling back until an expert's stream opens): `(meta, events)`;
        `meta` is settled in place when `events` ends."""
        request = plan.request
        body = request.upstream_body(self.settings.default_max_tokens)
        body["stream_options"] = {"include_usage": True}
        try:
            expert, upstream, attempts = await call_with_fallback(
                plan.ranked,
                lambda e: self.pool.client.open_stream(e, self._for(e, body, request)),
                self.pool.health,
                self.settings.max_attempts,
            )
        except (AllExpertsFailed, ExpertRejected) as exc:
            raise self._failure(exc) from exc
        meta = self._meta(plan.decision, expert, attempts)
        meta.ttft_ms = (time.perf_counter() - started) * 1000
        prompt_estimate = estimate_tokens(body["messages"])
        return meta, self._relay(upstream, request, meta, request_id, started, prompt_estimate)

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
            for event in failed(f"the expert failed mid-answer: {exc}", "expert_failed"):
                yield event
            return
        finally:
            self._settle(meta, expert, usage, started, pieces, prompt_estimate)
            await upstream.aclose()
        head: Json = {"id": request_id, "object": "chat.completion.chunk", "created": created}
        for event in closing(meta, head, request, expert):
            yield event
