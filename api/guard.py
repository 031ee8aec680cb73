"""What stands between an authenticated chat request and `ChatService`: limits, cache, metrics.

    key (KeyAuth) ─► Limiter.admit ─► cache lookup ─► ChatService ─► log ─► settle + metrics
                       429 ◄─┘          hit ◄─┘                      └─► cache save

`ChatService` knows none of this; it only takes the key id for the log and an `on_end` callback
that runs once the request is logged (however it ended, a stream included).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from api.cache import CacheHit, ResponseCache
from api.errors import APIError, RateLimited
from api.limits import Limiter
from api.metrics import Metrics
from api.schemas import ChatCompletionRequest
from api.serving import ChatService, CoeMeta, OnEnd
from api.store import ApiKey, Charge, RequestRecord, Store
from experts.tracing import span

__all__ = ["ChatGuard"]


class ChatGuard:
    def __init__(
        self,
        chat: ChatService,
        store: Store,
        limiter: Limiter,
        metrics: Metrics,
        cache: ResponseCache | None = None,
    ) -> None:
        self.chat = chat
        self.store = store
        self.limiter = limiter
        self.metrics = metrics
        self.cache = cache

    def _on_end(self, charge: Charge | None) -> OnEnd:
        async def ended(record: RequestRecord) -> None:
            self.metrics.observe(record)
            await self.limiter.settle(charge, record)

        return ended

    async def _admit(self, key: ApiKey | None, request: ChatCompletionRequest) -> Charge | None:
        arrived = time.time()
        try:
            with span("coe.admission", key=key.id if key else None):
                return await self.limiter.admit(key, request, arrived)
        except RateLimited as exc:
            self.metrics.rejected(exc.reason)
            record = RequestRecord(
                ts=arrived,
                request_id=f"chatcmpl-{uuid.uuid4().hex}",
                model=request.model,
                status=exc.status_code,
                latency_ms=(time.time() - arrived) * 1000,
                stream=request.stream,
                key_id=key.id if key else None,
                error=exc.message,
            )
            await self.store.log_request(record)
            self.metrics.observe(record)
            raise

    async def admit(self, key: ApiKey | None, request: ChatCompletionRequest) -> Charge | None:
        """Take `request` from `key`'s limits (429 when used up); other endpoints admit their
        requests through here, shaped as chat requests."""
        return await self._admit(key, request)

    def on_end(self, charge: Charge | None) -> OnEnd:
        """What must run once a request admitted with `charge` is logged."""
        return self._on_end(charge)

    async def complete(self, request: ChatCompletionRequest, key: ApiKey | None) -> JSONResponse:
        charge = await self._admit(key, request)
        key_id = key.id if key else None
        cache = self.cache if self.cache is not None and self.cache.cacheable(request) else None
        if cache is not None:
            hit = await self._lookup(cache, request, cache.scope(key_id))
            if hit is not None:
                return await self._answer_from_cache(request, hit, key_id, charge)
        response = await self.chat.complete(request, key_id, self._on_end(charge))
        if cache is not None:
            await cache.save(request, _json(response), cache.scope(key_id))
        return response

    async def stream(self, request: ChatCompletionRequest, key: ApiKey | None) -> StreamingResponse:
        charge = await self._admit(key, request)
        return await self.chat.stream(request, key.id if key else None, self._on_end(charge))

    async def _lookup(
        self, cache: ResponseCache, request: ChatCompletionRequest, scope: str | None
    ) -> CacheHit | None:
        routed: str | None = None
        if cache.semantic:
            try:
                ranked, _ = await self.chat.plan(request)
                routed = ranked[0]
            except APIError:
                routed = None  # ChatService will refuse the request and log why
        with span("coe.cache_lookup") as traced:
            hit = await cache.lookup(request, routed, scope)
            traced.set(cache_hit=hit is not None, cache_kind=hit.kind if hit else None)
        self.metrics.cache_lookup(hit.kind if hit else "any", hit is not None)
        return hit

    async def _answer_from_cache(
        self,
        request: ChatCompletionRequest,
        hit: CacheHit,
        key_id: str | None,
        charge: Charge | None,
    ) -> JSONResponse:
        started, arrived = time.perf_counter(), time.time()
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
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
        await self.store.log_request(record)
        await self._on_end(charge)(record)
        coe = meta.as_json() | {"cache": {"kind": hit.kind, "similarity": round(hit.similarity, 4)}}
        body = dict(hit.entry["answer"]) | {"id": request_id, "created": int(arrived), "coe": coe}
        headers = meta.headers() | {"x-request-id": request_id, "x-coe-cache": hit.kind}
        return JSONResponse(body, headers=headers)


def _json(response: JSONResponse) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(bytes(response.body))
    return data
