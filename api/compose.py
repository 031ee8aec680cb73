"""The compose executor: a plan of kind `compose` (`coe-compose`) runs here: recruit k experts,
compose their answers, stream the result.

The strategies live in `experts.compose`; this module gives them what only the gateway has: the
plan's routing decision (who to recruit, best first), the live pool (calls, health), the request's
limits (`coe.k`, `coe.strategy`, `coe.layers`, `coe.max_cost_usd`, `coe.timeout_s`, else the
settings) and the response shape. When the strategy ends with an aggregator, that last call is
streamed to the client as it is written; every earlier answer, its cost and any failure are in
`coe.compose`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import numpy as np

from api.errors import APIError, InvalidRequest, NoExpertAvailable, UpstreamTimeout
from api.meta import CoeMeta, answer_text
from api.routing import RouteDecision, RoutingService
from api.schemas import ChatCompletionRequest
from api.settings import Settings
from api.sse import closing, failed, sse, whole
from api.tokens import token_limit
from experts.compose import Budget, Composition, CompositionFailed, Outcome, Reply, SubAnswer
from experts.compose.base import Call, Estimate
from experts.compose.templates import Templates
from experts.errors import ExpertError, ExpertTimeout, PoolConfigError
from experts.fallback import Attempt
from experts.live import LivePool
from experts.tracing import span
from router.answers import option_letters
from router.query import estimate_tokens, routing_text
from router.vote import OPEN_ANSWERS, vote_weights

__all__ = ["ComposeService"]

Json = dict[str, Any]


def read_aggregation_profile(path: Path | None) -> dict[str, float]:
    """`{expert: accuracy as aggregator}` from the JSON `coe profile` writes (or {})."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PoolConfigError(f"compose.aggregation_profile {path}: cannot be read: {exc}") from exc
    scores = data.get("aggregation", data) if isinstance(data, dict) else None
    if not isinstance(scores, dict) or not all(isinstance(v, int | float) for v in scores.values()):
        raise PoolConfigError(
            f"compose.aggregation_profile {path}: expected {{expert: accuracy}} "
            "(the aggregation.json `coe profile` writes)"
        )
    return {str(k): float(v) for k, v in scores.items()}


class ComposeService:
    """Runs `coe-compose` requests over the live pool."""

    def __init__(self, pool: LivePool, routing: RoutingService, settings: Settings) -> None:
        self.pool = pool
        self.routing = routing
        self.settings = settings
        config = pool.config.compose
        self.templates = Templates.with_overrides(config.templates)
        self.aggregation = read_aggregation_profile(config.aggregation_profile)

    # -- choosing who takes part -------------------------------------------------------------

    def _estimate_cost(self, limit: int) -> Estimate:
        """A call's cost if its answer runs to the token limit: a bound, not a guess, so that
        `max_cost_usd` bounds the composition (prompts are still counted at ~4 chars a token)."""

        def estimate(expert: str, messages: list[Json]) -> float:
            return self.routing.experts[expert].cost_usd(estimate_tokens(messages), limit)

        return estimate

    def _role(self, named: str | None, ranked: list[str], down: set[str]) -> str | None:
        """The pool's named expert for a role, else the best aggregator by the profile, else
        the router's best-ranked expert; experts that are down only if nothing else is up."""
        # sorted() is stable: without a profile (or among unprofiled experts) routing order holds
        order = sorted(ranked, key=lambda e: -self.aggregation.get(e, -1.0))
        if named is not None:
            order = [named, *(e for e in order if e != named)]
        up = [e for e in order if e not in down]
        return next(iter(up or order), None)

    def _recruit(
        self,
        decision: RouteDecision,
        strategy: str,
        k: int,
        closer: str | None,
        messages: list[Json],
        budget: Budget,
        limit: int,
    ) -> list[str]:
        """The k best-ranked experts that are up whose first answers and the closing call
        (aggregator or judge, over their answers) fit `max_cost_usd`; moa adds layers later
        only while they fit."""
        down = self.pool.health.down()
        ranked = [e for e in decision.ranked if e not in down] or list(decision.ranked)
        estimate = self._estimate_cost(limit)
        prompt = estimate_tokens(messages)
        recruited: list[str] = []
        for expert in ranked:
            if len(recruited) == k:
                break
            trial = [*recruited, expert]
            cost = sum(estimate(e, messages) for e in trial)
            if strategy != "vote" and closer is not None and len(trial) > 1:
                # The aggregator or judge reads the messages and every answer at full length:
                # `limit` tokens and a message's 4 of framing each (computed, never allocated).
                later = prompt + len(trial) * (limit + 4)
                cost += self.routing.experts[closer].cost_usd(later, limit)
            if budget.affords(cost):
                recruited = trial
        if not recruited:
            raise InvalidRequest(
                "no expert fits this request's max_cost_usd for a composition; raise it or "
                "use coe-auto",
                param="coe.max_cost_usd",
            )
        return recruited

    # -- calling ------------------------------------------------------------------------------

    def _call(self, body: Json, requested: int | None) -> Call:
        async def call(expert: str, messages: list[Json]) -> Reply:
            limit = self._limit(expert, body, requested)
            upstream = {**body, "messages": messages, "max_tokens": limit}
            try:
                with span("coe.compose.call", expert=expert):
                    answer = await self.pool.client.complete(expert, upstream)
            except ExpertError as exc:
                if exc.retryable:
                    self.pool.health.mark_failed(expert, exc.message)
                raise
            self.pool.health.mark_ok(expert)
            return self._reply(expert, answer, messages)

        return call

    def _limit(self, expert: str, body: Json, requested: int | None) -> int:
        """The token limit a call to `expert` is sent: the request's, else the expert's pool
        default, else the gateway's (`body`'s); never above what its context holds."""
        descriptor = self.routing.experts[expert]
        limit = token_limit(descriptor, requested, int(body["max_tokens"]))
        return max(1, min(limit, descriptor.context_length))

    def _reply(self, expert: str, answer: Json, messages: list[Json]) -> Reply:
        text = answer_text(answer)
        usage = answer.get("usage") or {}
        if "prompt_tokens" in usage:
            prompt, completion = int(usage["prompt_tokens"]), int(usage.get("completion_tokens", 0))
            estimated = False
        else:
            prompt, completion, estimated = estimate_tokens(messages), max(1, len(text) // 4), True
        cost = self.routing.experts[expert].cost_usd(prompt, completion)
        return Reply(text, prompt, completion, round(cost, 12), estimated)

    async def _compose(
        self, request: ChatCompletionRequest, decision: RouteDecision
    ) -> tuple[Outcome, Budget, Json]:
        options = request.coe
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        budget = Budget.within(
            (options.timeout_s if options else None) or self.settings.compose_timeout_s,
            options.max_cost_usd if options else None,
        )
        body = request.upstream_body(self.settings.default_max_tokens)
        requested = request.completion_limit
        # the largest limit any call may be sent: estimates and the budget are bounds
        limit = max(self._limit(e, body, requested) for e in self.routing.experts)
        strategy = (options.strategy if options else None) or self.settings.compose_strategy
        k = (options.k if options else None) or self.settings.compose_k
        layers = (options.layers if options else None) or self.settings.compose_layers
        down = self.pool.health.down()
        config = self.pool.config.compose
        aggregator = self._role(config.aggregator, list(decision.ranked), down)
        judge = self._role(config.judge or config.aggregator, list(decision.ranked), down)
        closer = judge if strategy == "select" else aggregator
        recruited = self._recruit(decision, strategy, k, closer, messages, budget, limit)
        composition = Composition(
            self._call(body, requested), budget, self._estimate_cost(limit), self.templates
        )
        try:
            with span("coe.compose", strategy=strategy, k=len(recruited), aggregator=aggregator):
                outcome = await composition.run(
                    strategy,
                    recruited,
                    messages,
                    aggregator=aggregator,
                    judge=judge,
                    layers=layers,
                    weights=_vote_weights(decision, messages),
                )
        except CompositionFailed as exc:
            raise _failure(exc) from exc
        return outcome, budget, body

    # -- answering ----------------------------------------------------------------------------

    async def complete(
        self, request: ChatCompletionRequest, decision: RouteDecision, started: float
    ) -> tuple[Json, CoeMeta]:
        """The composed answer as a `chat.completion` and its `coe` metadata; `decision` is the
        plan's (who to recruit, best first)."""
        outcome, budget, body = await self._compose(request, decision)
        created = int(time.time())
        if outcome.final_call is not None:
            expert, messages = outcome.final_call
            final = SubAnswer(expert, "aggregator", 1 + max(a.layer for a in outcome.answers))
            outcome.answers.append(final)
            call_started = time.perf_counter()
            try:
                async with asyncio.timeout(budget.remaining_s()):
                    reply = await self._call(body, request.completion_limit)(expert, messages)
            except (ExpertError, TimeoutError) as exc:
                _fail_final(outcome, final, exc)
            else:
                final.settle(reply, call_started)
                outcome.text, outcome.expert = reply.text, expert
        meta = _meta(outcome, decision, started)
        message = {"role": "assistant", "content": outcome.text}
        answer: Json = {
            "object": "chat.completion",
            "created": created,
            "model": outcome.expert,
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": meta.prompt_tokens,
                "completion_tokens": meta.completion_tokens,
                "total_tokens": meta.prompt_tokens + meta.completion_tokens,
            },
        }
        return answer, meta

    async def stream(
        self,
        request: ChatCompletionRequest,
        decision: RouteDecision,
        request_id: str,
        started: float,
    ) -> tuple[CoeMeta, AsyncGenerator[bytes, None]]:
        """Compose, then stream the aggregator's answer as it is written (or the chosen answer
        at once); the last chunk carries `coe`. Errors before the stream opens are raised."""
        outcome, budget, body = await self._compose(request, decision)
        upstream = None
        if outcome.final_call is not None:
            expert, messages = outcome.final_call
            final = SubAnswer(expert, "aggregator", 1 + max(a.layer for a in outcome.answers))
            outcome.answers.append(final)
            stream_body = {**body, "messages": messages, "stream_options": {"include_usage": True}}
            stream_body["max_tokens"] = self._limit(expert, body, request.completion_limit)
            final_started = time.perf_counter()
            try:
                async with asyncio.timeout(budget.remaining_s()):
                    upstream = await self.pool.client.open_stream(expert, stream_body)
            except (ExpertError, TimeoutError) as exc:
                _fail_final(outcome, final, exc)
        meta = _meta(outcome, decision, started)
        meta.ttft_ms = (time.perf_counter() - started) * 1000
        chunk: Json = {"id": request_id, "object": "chat.completion.chunk"}
        chunk["created"] = int(time.time())
        if upstream is None:
            events = whole(outcome.text or "", meta, chunk, request, outcome.expert)
        else:
            timing = (started, final_started)
            events = self._relay(upstream, outcome, meta, budget, timing, chunk, request)
        return meta, events

    async def _relay(
        self,
        upstream: Any,
        outcome: Outcome,
        meta: CoeMeta,
        budget: Budget,
        timing: tuple[float, float],
        chunk: Json,
        request: ChatCompletionRequest,
    ) -> AsyncGenerator[bytes, None]:
        """Pass the aggregator's chunks on, then settle its cost into `meta` (in place: the
        request log reads the same object when the stream ends). However the stream ends (the
        client gone, the aggregator failed), what it streamed is settled and paid for."""
        started, final_started = timing
        final = outcome.answers[-1]
        messages = outcome.final_call[1] if outcome.final_call else []
        pieces: list[str] = []
        usage: Json | None = None
        try:
            async with asyncio.timeout(budget.remaining_s()):
                async for event in upstream:
                    if "error" in event:
                        raise ExpertError(final.expert, str(event["error"]))
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        pieces.append(str((choice.get("delta") or {}).get("content") or ""))
                    if event.get("choices"):
                        yield sse({**chunk, "model": final.expert, "choices": event["choices"]})
        except (ExpertError, TimeoutError) as exc:
            self.pool.health.mark_failed(final.expert, str(exc))
            why = "the composition's deadline passed" if isinstance(exc, TimeoutError) else exc
            final.error = str(why)
            for event in failed(f"the aggregator failed mid-answer: {why}"):
                yield event
            return
        finally:
            text = "".join(pieces)
            answer = {"choices": [{"message": {"content": text}}], "usage": usage or {}}
            final.settle(self._reply(final.expert, answer, messages), final_started)
            outcome.text, outcome.expert = text, final.expert
            _settle(meta, outcome, started)
            await upstream.aclose()
        for event in closing(meta, chunk, request, final.expert):
            yield event


def _vote_weights(decision: RouteDecision, messages: list[Json]) -> dict[str, float]:
    """Each expert's vote weight: its reliability on this query by the router's predicted
    quality (`router.vote`, Symbolic-MoE's profile); equal under a router that predicts none."""
    letters = option_letters(routing_text(messages))
    names = list(decision.scores)
    quality = np.array([decision.scores[n] for n in names])
    weights = vote_weights(quality, len(letters) if letters else OPEN_ANSWERS)
    return {n: float(w) for n, w in zip(names, weights, strict=True)}


def _fail_final(outcome: Outcome, final: SubAnswer, exc: BaseException) -> None:
    """The aggregator failed: answer with the best-ranked proposal instead, and say so."""
    final.error = exc.message if isinstance(exc, ExpertError) else "the composition's deadline"
    final.timed_out = isinstance(exc, ExpertTimeout | TimeoutError)
    best = next(a for a in outcome.answers if a.ok and a.role == "proposer")
    outcome.final_call = None
    outcome.text, outcome.expert = best.text, best.expert
    outcome.notes.append(f"the aggregator {final.expert} failed: took the best-ranked answer")


def _failure(exc: CompositionFailed) -> APIError:
    tried = [{"expert": a.expert, "error": a.error} for a in exc.answers]
    if exc.timed_out:
        return UpstreamTimeout(str(exc), tried=tried)
    return NoExpertAvailable(str(exc), tried=tried)


def _meta(outcome: Outcome, decision: RouteDecision, started: float) -> CoeMeta:
    meta = CoeMeta(router=decision.router, scores=decision.scores, experts=[], tried=[])
    _settle(meta, outcome, started)
    return meta


def _settle(meta: CoeMeta, outcome: Outcome, started: float) -> None:
    """Fill `meta` with the whole composition: every call's tokens and cost, and who failed."""
    meta.experts = list(dict.fromkeys(a.expert for a in outcome.answers if a.ok))
    meta.tried = [Attempt(a.expert, a.error, a.timed_out) for a in outcome.answers]
    meta.prompt_tokens = sum(a.prompt_tokens for a in outcome.answers)
    meta.completion_tokens = sum(a.completion_tokens for a in outcome.answers)
    meta.usage_estimated = any(a.usage_estimated for a in outcome.answers)
    meta.cost_usd = round(sum(a.cost_usd for a in outcome.answers), 12)
    meta.latency_ms = (time.perf_counter() - started) * 1000
    meta.compose = {
        "strategy": outcome.strategy,
        "answered_by": outcome.expert,
        "early_stopped": outcome.early_stopped,
        "votes": outcome.votes or None,
        "answers": [a.as_json() for a in outcome.answers],
        "failed": [{"expert": a.expert, "error": a.error} for a in outcome.failures],
        "notes": outcome.notes,
    }
