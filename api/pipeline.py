"""`POST /v1/chat/completions`, top to bottom. Each step is a module that hands the next a value:

    KeyAuth (middleware) ─► validate (pydantic)
      ─► plan.shape      kind single | cascade | compose, max calls, worst case   (api.plan, no I/O)
      ─► admit           key limits; reserve the worst case; 429 before anything   (api.limits)
      ─► plan.route      the request's one routing decision                        (api.plan)
      ─► cache           exact, or semantic on the routed expert; a hit costs nothing (api.cache)
      ─► execute         single with fallback | cascade | compose     (api.serving/cascade/compose)
      ─► settle          log ─► settle the reservation to the real cost ─► metrics (api.settle)

Admission comes before routing on purpose: the worst case is a bound over every expert the
request may reach, so it is known without routing, and a rate-limited client never costs an
embedding. The executors only call experts and fill a `CoeMeta`; they never route, admit or log.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from api.cache import CacheHit, ResponseCache
from api.cascade import Cascade
from api.compose import ComposeService
from api.errors import APIError, RateLimited
from api.jsonio import JSONBody, loads
from api.limits import Limiter
from api.meta import CoeMeta, Json, OnEnd, answer_text, new_request_id, request_record
from api.metrics import Metrics
from api.plan import Plan, Planner
from api.schemas import ChatCompletionRequest
from api.serving import SingleExpert
from api.settle import RequestLog
from api.store import ApiKey, Charge, RequestRecord
from api.streams import respond
from experts.tracing import span

__all__ = ["ChatPipeline", "Executors"]


class Executors:
    """The three ways a plan runs; `cascade` is None when no step-wise router is loaded."""

    def __init__(
        self, single: SingleExpert, composer: ComposeService, cascade: Cascade | None = None
    ) -> None:
        self.single, self.composer, self.cascade = single, composer, cascade

    async def complete(self, plan: Plan, started: float) -> tuple[Json, CoeMeta]:
        if plan.kind == "single":
            return await self.single.complete(plan, started)
        assert plan.decision is not None  # cascades and compositions are always routed
        if plan.kind == "compose":
            return await self.composer.complete(plan.request, plan.decision, started)
        assert self.cascade is not None
        return await self.cascade.complete(plan.request, plan.decision, started)

    async def stream(
        self, plan: Plan, request_id: str, started: float
    ) -> tuple[CoeMeta, AsyncGenerator[bytes, None]]:
        if plan.kind == "single":
            return await self.single.stream(plan, request_id, started)
        assert plan.decision is not None
        if plan.kind == "compose":
            return await self.composer.stream(plan.request, plan.decision, request_id, started)
        assert self.cascade is not None
        return await self.cascade.stream(plan.request, plan.decision, request_id, started)


class ChatPipeline:
    """The chat path. `complete` and `stream` take a validated request and its caller's key
    (None on an open gateway); `admit` and `on_end` serve the other endpoints that count
    against the same limits (`api.passthrough`)."""

    def __init__(
        self,
        planner: Planner,
        limiter: Limiter,
        executors: Executors,
        log: RequestLog,
        metrics: Metrics,
        cache: ResponseCache | None = None,
    ) -> None:
        self.planner = planner
        self.limiter = limiter
        self.executors = executors
        self.log = log
        self.metrics = metrics
        self.cache = cache
        self.pool, self.settings = planner.pool, planner.settings

    # -- admit ---------------------------------------------------------------------------------

    async def _admit(self, key: ApiKey | None, plan: Plan) -> Charge | None:
        arrived = time.time()
        try:
            with span("coe.admission", key=key.id if key else None):
                return await self.limiter.admit(key, plan, arrived)
        except RateLimited as exc:
            self.metrics.rejected(exc.reason)
            record = RequestRecord(
                ts=arrived,
                request_id=new_request_id(),
                model=plan.request.model,
                status=exc.status_code,
                latency_ms=(time.time() - arrived) * 1000,
                stream=plan.request.stream,
                key_id=key.id if key else None,
                error=exc.message,
            )
            await self.log.store.log_request(record)
            self.metrics.observe(record)
            raise

    async def admit(self, key: ApiKey | None, request: ChatCompletionRequest) -> Charge | None:
        """Take `request` from `key`'s limits (429 when used up); other endpoints admit their
        requests through here, shaped as chat requests."""
        return await self._admit(key, self.planner.shape(request))

    def on_end(self, charge: Charge | None) -> OnEnd:
        """What must run once a request admitted with `charge` is logged: the reservation is
        settled to what the record says it cost, and the metrics count it."""

        async def ended(record: RequestRecord) -> None:
            self.metrics.observe(record)
            await self.limiter.settle(charge, record)

        return ended

    # -- the two shapes of answer --------------------------------------------------------------

    async def complete(
        self, request: ChatCompletionRequest, key: ApiKey | None = None, plan: Plan | None = None
    ) -> JSONResponse:
        """Answer `request` whole. `plan`: one already routed (`coe batch` groups lines by it)."""
        plan = plan or self.planner.shape(request)
        charge = await self._admit(key, plan)
        key_id, on_end = (key.id if key else None), self.on_end(charge)
        arrived, request_id = time.time(), new_request_id()
        started = time.perf_counter()
        cache = self.cache if self.cache is not None and self.cache.cacheable(request) else None
        scope = cache.scope(key_id) if cache is not None else None
        try:
            if cache is not None:
                if cache.semantic:  # its lookup is among the routed expert's answers
                    plan = await self._routed(plan)
                hit = await self._lookup(cache, plan, scope)
                if hit is not None:
                    return await self._answer_from_cache(request, hit, key_id, on_end)
            plan = await self._routed(plan)
            answer, meta = await self.executors.complete(plan, started)
        except APIError as exc:
            await self.log.failure(request, request_id, arrived, exc, key_id, on_end)
            raise
        response = await self._answered(plan, answer, meta, request_id, arrived, key_id, on_end)
        if cache is not None:
            await cache.save(request, _json(response), scope)
        return response

    async def stream(
        self, request: ChatCompletionRequest, key: ApiKey | None = None
    ) -> StreamingResponse:
        """Stream the answer to `request`; it is logged and settled when the stream ends."""
        plan = self.planner.shape(request)
        charge = await self._admit(key, plan)
        key_id, on_end = (key.id if key else None), self.on_end(charge)
        arrived, request_id = time.time(), new_request_id()
        started = time.perf_counter()
        try:
            plan = await self.planner.route(plan)
            meta, events = await self.executors.stream(plan, request_id, started)
            sticky = self.planner.sticky
            if sticky is not None and plan.kind == "single" and plan.decision is not None:
                await sticky.remember(request, meta.experts[0])
        except APIError as exc:
            await self.log.failure(request, request_id, arrived, exc, key_id, on_end)
            raise
        ended = self.log.ender(events, request, request_id, arrived, meta, key_id, on_end)
        headers = meta.headers(final=False) | {"x-request-id": request_id}
        return await respond(events, ended, headers, self.settings.stream_deadline_s)

    # -- the steps' glue -----------------------------------------------------------------------

    async def _routed(self, plan: Plan) -> Plan:
        return plan if plan.routed else await self.planner.route(plan)

    async def _lookup(self, cache: ResponseCache, plan: Plan, scope: str | None) -> CacheHit | None:
        routed = plan.ranked[0] if plan.routed and plan.ranked else None
        with span("coe.cache_lookup") as traced:
            hit = await cache.lookup(plan.request, routed, scope)
            traced.set(cache_hit=hit is not None, cache_kind=hit.kind if hit else None)
        self.metrics.cache_lookup(hit.kind if hit else "any", hit is not None)
        return hit

    async def _answered(
        self,
        plan: Plan,
        answer: Json,
        meta: CoeMeta,
        request_id: str,
        arrived: float,
        key_id: str | None,
        on_end: OnEnd,
    ) -> JSONResponse:
        """Settle a whole answer: the conversation's expert, the log (then `on_end`), the
        cascade's episode for feedback; then the response with `coe` and the headers."""
        request = plan.request
        record = request_record(request, request_id, arrived, meta, 200)
        sticky = self.planner.sticky
        if sticky is not None and request.model == "coe-auto" and meta.experts:
            await sticky.remember(request, meta.experts[-1])
        if self.settings.log_prompts:
            record.answer = answer_text(answer)
        await self.log.write(record, request, key_id, on_end)
        if plan.kind == "cascade" and self.executors.cascade is not None:
            self.executors.cascade.served(request_id, meta)
        answer |= {"id": request_id, "coe": meta.as_json()}
        headers = meta.headers() | {"x-request-id": request_id}
        return JSONBody(answer, headers=headers)

    async def _answer_from_cache(
        self, request: ChatCompletionRequest, hit: CacheHit, key_id: str | None, on_end: OnEnd
    ) -> JSONResponse:
        started, arrived = time.perf_counter(), time.time()
        request_id = new_request_id()
        cached: dict[str, Any] = hit.entry.get("coe") or {}
        meta = CoeMeta(
            router=cached.get("router"),
            scores=dict(cached.get("scores") or {}),
            experts=list(cached.get("experts") or []),
            tried=[],
            cache_hit=True,
        )
        meta.latency_ms = (time.perf_counter() - started) * 1000
        record = RequestRecord(
            ts=arrived,
            request_id=request_id,
            model=request.model,
            status=200,
            latency_ms=meta.latency_ms,
            experts=meta.experts,
            router=meta.router,
            scores=meta.scores,
            key_id=key_id,
            cache_hit=True,
        )
        await self.log.store.log_request(record)
        await on_end(record)
        coe = meta.as_json() | {"cache": {"kind": hit.kind, "similarity": round(hit.similarity, 4)}}
        body = dict(hit.entry["answer"]) | {"id": request_id, "created": int(arrived), "coe": coe}
        headers = meta.headers() | {"x-request-id": request_id, "x-coe-cache": hit.kind}
        return JSONBody(body, headers=headers)


def _json(response: JSONResponse) -> dict[str, Any]:
    data: dict[str, Any] = loads(response.body)
    return data
