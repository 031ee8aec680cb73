"""The cascade executor: a plan of kind `cascade` (`coe-auto` with a multi-step router) runs here,
a cascade of calls, cheap first, escalating on demand.

When the request's router runs live episodes (`router.episodes.Episode`: the `rl` policy, an
agreement `chain`; `api.plan` decides that, and how many calls the budget reserves), the
gateway asks it step by step which expert to call next or whether to answer; the answer is the
reply of the expert the episode names (`answer_expert`). An expert that fails is skipped (the
episode picks among the rest). `coe.max_cost_usd` is a hard cap: the episode never proposes an
expert whose estimated cost does not fit what is left, and each call's `max_tokens` is cut so
that even its worst case fits (the prompt counted at its upper bound, one token a byte, and the
whole completion). The response's `coe.steps` lists every call with its expert, cost and
predicted quality.

Streams: a decision to escalate needs the whole answer, so every call but the last is made
whole; the call that must be the last (`Episode.last_call`) is streamed to the client as it is
written. When the episode stops after a whole answer, that answer goes out in one chunk.
The last chunk carries `coe` with every step.

Each answer's text goes to the episode (`record`), which reads what it needs from it: an `rl`
policy trained on answer features their live values (`router.rl_answers.answer_features`), a
chain the reply's conclusion.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np

from api.errors import NoExpertAvailable, RejectedByExpert
from api.learning import OnlineLearner
from api.meta import CoeMeta
from api.routing import RouteDecision, RoutingService
from api.schemas import ChatCompletionRequest
from api.sse import closing, failed, sse, whole
from api.tokens import token_limit
from experts.client import ExpertStream
from experts.errors import ExpertError
from experts.fallback import Attempt
from experts.live import LivePool
from experts.tracing import span
from router.episodes import Episode, runs_episodes
from router.query import estimate_tokens, max_prompt_tokens, routing_text
from router.rl import RLRouter
from router.rl_answers import ANSWER_FEATURES
from router.rl_online import Trace

__all__ = ["Cascade", "CascadeResult"]

Json = dict[str, Any]


def _answer_text(answer: Json) -> str:
    choices = answer.get("choices") or [{}]
    return str((choices[0].get("message") or {}).get("content") or "")


def _check_servable(router: RLRouter) -> None:
    """Refuse a policy trained on answer features the gateway cannot compute: it would see
    zeros where training showed it evidence, and decide on nothing."""
    trained = int(getattr(router, "n_answer_features_", 0))
    names = tuple(getattr(router, "answer_feature_names_", ()))
    if trained and names != ANSWER_FEATURES[:trained]:
        raise ValueError(
            f"router {router.name!r} was trained on {trained} answer feature(s) that coe cannot "
            f"compute from a live answer (it computes {', '.join(ANSWER_FEATURES)} from the "
            "recorded responses: train with RoutingData.responses, not answer_features=)"
        )


class CascadeResult:
    """The answer, its calls, and the episode's trace (for feedback).

    A streamed cascade whose last call is still being written has `stream` (that call, opened)
    and `episode` (to record its cost when it ends) instead of `answer` and `trace`.
    """

    def __init__(
        self,
        answer: Json | None,
        steps: list[Json],
        attempts: list[Attempt],
        trace: Trace | None,
        stream: ExpertStream | None = None,
        episode: Episode | None = None,
    ):
        self.answer, self.steps, self.attempts, self.trace = answer, steps, attempts, trace
        self.stream, self.episode = stream, episode


class Cascade:
    def __init__(
        self,
        pool: LivePool,
        routing: RoutingService,
        learner: OnlineLearner,
        default_max_tokens: int,
    ) -> None:
        for router in routing.routers.values():
            if isinstance(router, RLRouter):
                _check_servable(router)
        self.pool = pool
        self.routing = routing
        self.learner = learner
        self.default_max_tokens = default_max_tokens
        self.rng = np.random.default_rng()

    def _affordable_tokens(self, expert: str, prompt: int, left: float, limit: int) -> int:
        if math.isinf(left):
            return limit
        d = self.routing.experts[expert]
        if d.output_price <= 0:
            return limit
        room = (left - prompt * d.input_price / 1e6) * 1e6 / d.output_price
        return min(limit, int(room))

    async def run(
        self, request: ChatCompletionRequest, decision: RouteDecision, stream_last: bool = False
    ) -> CascadeResult:
        """Run the episode; with `stream_last`, a call that must be the last is opened as a
        stream and returned unread (see `CascadeResult`)."""
        router = self.routing.routers[decision.router]
        assert runs_episodes(router)
        options = request.coe
        body = request.upstream_body(self.default_max_tokens)
        prompt = estimate_tokens(body["messages"])
        worst_prompt = max_prompt_tokens(body["messages"])  # the cap holds whatever it counts
        costs = np.array([decision.estimated_cost_usd[m] for m in router.models_])
        episode = router.episode(
            decision.embedding,
            costs,
            question=routing_text(body["messages"], max_chars=1_000_000),
            cost_weight=options.cost_weight if options else None,
            budget=options.max_cost_usd if options else None,
            explore=self.learner.exploration(router),  # type: ignore[arg-type]
            rng=self.rng,
        )
        # down, or lacking what the request needs (tools, modalities, context)
        episode.exclude(set(decision.unavailable) | set(decision.excluded))
        steps: list[Json] = []
        attempts: list[Attempt] = []
        answers: dict[str, Json] = {}
        while (expert := episode.next_expert()) is not None:
            descriptor = self.routing.experts[expert]
            limit = token_limit(descriptor, request.completion_limit, int(body["max_tokens"]))
            tokens = self._affordable_tokens(
                expert, worst_prompt, episode.remaining, min(limit, descriptor.context_length)
            )
            if tokens < 1:
                episode.skip(expert)
                continue
            try:
                if stream_last and episode.last_call():
                    streamed = {**body, "max_tokens": tokens, "stream": True}
                    streamed["stream_options"] = {"include_usage": True}
                    upstream = await self.pool.client.open_stream(expert, streamed)
                    self.pool.health.mark_ok(expert)
                    attempts.append(Attempt(expert))
                    steps.append(self._step(expert, 0.0, decision))
                    return CascadeResult(None, steps, attempts, None, upstream, episode)
                with span(
                    "coe.cascade.step",
                    step=len(steps) + 1,
                    expert=expert,
                    predicted_quality=decision.scores.get(expert),
                ):
                    result = await self.pool.client.complete(expert, {**body, "max_tokens": tokens})
            except ExpertError as exc:
                attempts.append(Attempt(expert, exc.message))
                if not exc.retryable and answers:
                    break  # the request is what the later expert refused: keep the paid answer
                if not exc.retryable:
                    raise RejectedByExpert(
                        f"the expert rejected the request: {exc}",
                        getattr(exc, "status_code", 400),
                        tried=[a.as_json() for a in attempts],
                    ) from exc
                self.pool.health.mark_failed(expert, exc.message)
                episode.skip(expert)
                continue
            self.pool.health.mark_ok(expert)
            attempts.append(Attempt(expert))
            usage = result.get("usage") or {}
            cost = self.routing.experts[expert].cost_usd(
                int(usage.get("prompt_tokens") or prompt), int(usage.get("completion_tokens") or 0)
            )
            episode.record(expert, round(cost, 12), _answer_text(result))
            steps.append(self._step(expert, cost, decision) | {"usage": usage})
            answers[expert] = result
        chosen = episode.answer_expert() or ""
        answer = answers.get(chosen)
        if answer is None:
            raise NoExpertAvailable(
                "no expert could answer within the cascade's limits",
                tried=[a.as_json() for a in attempts],
            )
        answer["model"] = chosen
        return CascadeResult(answer, steps, attempts, episode.trace())

    @staticmethod
    def _step(expert: str, cost: float, decision: RouteDecision) -> Json:
        return {
            "expert": expert,
            "cost_usd": round(cost, 12),
            "predicted_quality": round(decision.scores.get(expert, 0.0), 6),
        }

    async def complete(
        self, request: ChatCompletionRequest, decision: RouteDecision, started: float
    ) -> tuple[Json, CoeMeta]:
        """The answer and its `CoeMeta` (steps, summed tokens and cost)."""

        with span("coe.cascade", router=decision.router) as traced:
            done = await self.run(request, decision)
            traced.set(steps=len(done.steps), cost_usd=sum(s["cost_usd"] for s in done.steps))
        assert done.answer is not None
        meta = self._meta(done, decision, started)
        return done.answer, meta

    @staticmethod
    def _meta(done: CascadeResult, decision: RouteDecision, started: float) -> CoeMeta:
        meta = CoeMeta(
            router=decision.router,
            scores=decision.scores,
            experts=[s["expert"] for s in done.steps],
            tried=done.attempts,
        )
        for step in done.steps:
            usage = step.pop("usage", None) or {}
            meta.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            meta.completion_tokens += int(usage.get("completion_tokens") or 0)
        meta.cost_usd = round(sum(s["cost_usd"] for s in done.steps), 12)
        meta.latency_ms = (time.perf_counter() - started) * 1000
        meta.steps = done.steps
        meta.trace = done.trace
        return meta

    async def stream(
        self,
        request: ChatCompletionRequest,
        decision: RouteDecision,
        request_id: str,
        started: float,
    ) -> tuple[CoeMeta, AsyncGenerator[bytes, None]]:
        """Run the cascade for a streamed request: `(meta, events)`; `meta` is completed in
        place when the last call's stream ends (the request log reads it then)."""
        done = await self.run(request, decision, stream_last=True)
        meta = self._meta(done, decision, started)
        meta.ttft_ms = (time.perf_counter() - started) * 1000
        chunk: Json = {"id": request_id, "object": "chat.completion.chunk"}
        chunk["created"] = int(time.time())
        if done.stream is None:
            assert done.answer is not None
            self.served(request_id, meta)
            expert = done.answer.get("model") or done.steps[-1]["expert"]  # the episode's reply
            return meta, whole(_answer_text(done.answer), meta, chunk, request, expert)
        return meta, self._relay(done, meta, chunk, request, request_id, started)

    async def _relay(
        self,
        done: CascadeResult,
        meta: CoeMeta,
        chunk: Json,
        request: ChatCompletionRequest,
        request_id: str,
        started: float,
    ) -> AsyncGenerator[bytes, None]:
        """Pass the last call's chunks on, then charge it and close with `coe`."""
        upstream, episode = done.stream, done.episode
        assert upstream is not None and episode is not None
        expert = upstream.expert
        usage: Json = {}
        pieces = 0
        try:
            async for event in upstream:
                if "error" in event:
                    raise ExpertError(expert, str(event["error"]))
                usage = event.get("usage") or usage
                if event.get("choices"):
                    pieces += any((c.get("delta") or {}).get("content") for c in event["choices"])
                    yield sse({**chunk, "model": expert, "choices": event["choices"]})
        except ExpertError as exc:
            self.pool.health.mark_failed(expert, exc.message)
            for line in failed(f"the expert failed mid-answer: {exc}"):
                yield line
            return
        finally:
            # however the stream ended (done, the expert failed, the client went away), the
            # prompt and the chunks sent are paid for
            await upstream.aclose()
            self._charge_last(done, meta, usage, pieces, request, started)
        self.served(request_id, meta)
        for line in closing(meta, chunk, request, expert):
            yield line

    def _charge_last(
        self,
        done: CascadeResult,
        meta: CoeMeta,
        usage: Json,
        pieces: int,
        request: ChatCompletionRequest,
        started: float,
    ) -> None:
        """Settle the streamed last call into `meta` and the episode: the expert's usage, else
        the prompt estimated and one token a content chunk."""
        assert done.stream is not None and done.episode is not None
        expert = done.stream.expert
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or pieces)
        meta.usage_estimated = "prompt_tokens" not in usage
        if meta.usage_estimated:
            prompt = estimate_tokens(request.upstream_body(self.default_max_tokens)["messages"])
        cost = round(self.routing.experts[expert].cost_usd(prompt, completion), 12)
        done.steps[-1]["cost_usd"] = cost
        done.episode.record(expert, cost)
        meta.prompt_tokens += prompt
        meta.completion_tokens += completion
        meta.cost_usd = round(sum(s["cost_usd"] for s in done.steps), 12)
        meta.latency_ms = (time.perf_counter() - started) * 1000
        meta.trace = done.episode.trace()

    def served(self, request_id: str, meta: CoeMeta) -> None:
        """Keep the episode of a served request for feedback."""
        if getattr(meta, "trace", None) is not None and meta.router in self.learner.routers:
            self.learner.remember(request_id, meta.router, meta.trace)
