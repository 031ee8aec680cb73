"""`coe-auto` with a multi-step router: a cascade of calls, cheap first, escalating on demand.

When the request's router runs live episodes (`rl`), the gateway asks it step by step which
expert to call next or whether to answer; the answer is the last expert's. An expert that fails
is skipped (the policy picks among the rest). `coe.max_cost_usd` is a hard cap: the policy is
never offered an expert whose estimated cost does not fit what is left, and each call's
`max_tokens` is cut so that even its worst case fits (the prompt counted at its upper bound,
one token a byte, and the whole completion). The response's `coe.steps`
lists every call with its expert, cost and predicted quality. Streams use the one-shot path.

A policy trained on answer features (`RLRouter.observes_answers`: length, format, agreement
from recorded responses) observes the same features of each live answer, computed from its text
by the same function (`router.rl_answers.answer_features`), before deciding whether to escalate.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from api.errors import NoExpertAvailable, RejectedByExpert
from api.learning import OnlineLearner
from api.routing import RouteDecision, RoutingService
from api.schemas import ChatCompletionRequest
from experts.errors import ExpertError
from experts.fallback import Attempt
from experts.live import LivePool
from experts.tracing import span
from router.query import estimate_tokens, max_prompt_tokens, routing_text
from router.rl import RLRouter
from router.rl_answers import ANSWER_FEATURES, answer_features
from router.rl_online import LiveEpisode, Trace

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
    """The answer, its calls, and the episode's trace (for feedback)."""

    def __init__(self, answer: Json, steps: list[Json], attempts: list[Attempt], trace: Trace):
        self.answer, self.steps, self.attempts, self.trace = answer, steps, attempts, trace


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

    def applies(self, request: ChatCompletionRequest, decision: RouteDecision | None) -> bool:
        if decision is None or request.stream or decision.embedding is None:
            return False
        return isinstance(self.routing.routers.get(decision.router), RLRouter)

    def max_calls(self, request: ChatCompletionRequest) -> int:
        """The most calls a cascade for `request` may make (1 when it will not run one)."""
        if request.model != "coe-auto" or request.stream:
            return 1
        name = (request.coe.router if request.coe else None) or self.routing.default
        router = self.routing.routers.get(name)
        return router.max_calls if isinstance(router, RLRouter) else 1

    def _affordable_tokens(self, expert: str, prompt: int, left: float, limit: int) -> int:
        if math.isinf(left):
            return limit
        d = self.routing.experts[expert]
        if d.output_price <= 0:
            return limit
        room = (left - prompt * d.input_price / 1e6) * 1e6 / d.output_price
        return min(limit, int(room))

    async def run(self, request: ChatCompletionRequest, decision: RouteDecision) -> CascadeResult:
        router = self.routing.routers[decision.router]
        assert isinstance(router, RLRouter) and decision.embedding is not None
        options = request.coe
        body = request.upstream_body(self.default_max_tokens)
        prompt = estimate_tokens(body["messages"])
        worst_prompt = max_prompt_tokens(body["messages"])  # the cap holds whatever it counts
        costs = np.array([decision.estimated_cost_usd[m] for m in router.models_])
        episode = LiveEpisode(
            router,
            decision.embedding,
            costs,
            cost_weight=options.cost_weight if options else None,
            budget=options.max_cost_usd if options else None,
            explore=self.learner.exploration(router),
            rng=self.rng,
        )
        # down, or lacking what the request needs (tools, modalities, context)
        episode.exclude(set(decision.unavailable) | set(decision.excluded))
        steps: list[Json] = []
        attempts: list[Attempt] = []
        answer: Json | None = None
        question = routing_text(body["messages"], max_chars=1_000_000)
        texts: list[str] = []  # the answers so far, for the features' agreement
        while (expert := episode.next_expert()) is not None:
            tokens = self._affordable_tokens(
                expert, worst_prompt, episode.remaining, body["max_tokens"]
            )
            if tokens < 1:
                episode.skip(expert)
                continue
            try:
                with span(
                    "coe.cascade.step",
                    step=len(steps) + 1,
                    expert=expert,
                    predicted_quality=decision.scores.get(expert),
                ):
                    result = await self.pool.client.complete(expert, {**body, "max_tokens": tokens})
            except ExpertError as exc:
                attempts.append(Attempt(expert, exc.message))
                if not exc.retryable and answer is not None:
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
            features = None
            if router.observes_answers:
                text = _answer_text(result)
                features = answer_features(text, question, texts)
                texts.append(text)
            episode.record(expert, round(cost, 12), features)
            steps.append(
                {
                    "expert": expert,
                    "cost_usd": round(cost, 12),
                    "predicted_quality": round(decision.scores.get(expert, 0.0), 6),
                    "usage": usage,
                }
            )
            answer = result
        if answer is None:
            raise NoExpertAvailable(
                "no expert could answer within the cascade's limits",
                tried=[a.as_json() for a in attempts],
            )
        return CascadeResult(answer, steps, attempts, episode.trace())

    async def complete(
        self, request: ChatCompletionRequest, decision: RouteDecision, started: float
    ) -> tuple[Json, Any]:
        """The answer and its `CoeMeta` (steps, summed tokens and cost) for `ChatService`."""
        from api.serving import CoeMeta

        with span("coe.cascade", router=decision.router) as traced:
            done = await self.run(request, decision)
            traced.set(steps=len(done.steps), cost_usd=sum(s["cost_usd"] for s in done.steps))
        last = done.steps[-1]["expert"]
        meta = CoeMeta(
            router=decision.router,
            scores=decision.scores,
            experts=[s["expert"] for s in done.steps],
            tried=done.attempts,
        )
        for step in done.steps:
            meta.prompt_tokens += int(step["usage"].get("prompt_tokens") or 0)
            meta.completion_tokens += int(step["usage"].get("completion_tokens") or 0)
            step.pop("usage")
        meta.cost_usd = round(sum(s["cost_usd"] for s in done.steps), 12)
        meta.latency_ms = (time.perf_counter() - started) * 1000
        meta.steps = done.steps
        meta.trace = done.trace
        done.answer["model"] = last
        return done.answer, meta

    def served(self, request_id: str, meta: Any) -> None:
        """Keep the episode of a served request for feedback."""
        if getattr(meta, "trace", None) is not None and meta.router:
            self.learner.remember(request_id, meta.router, meta.trace)
