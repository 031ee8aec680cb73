"""Per-key rate limits (requests and tokens per minute) and USD budgets (per day or month, UTC).

Before a request is sent, `Limiter.admit` takes one request, its estimated tokens and the most it
can cost from the key's windows in one atomic store call (a Lua script on Redis), or refuses with
429 and `retry-after`. After it ends, `Limiter.settle` replaces the reservation by what the
request really used, so a budget is charged the real cost.

The reservation is a bound, not a guess: every call is reserved at the `max_tokens` it is sent
with (`completion_tokens`: the client's limit, else `COE_DEFAULT_MAX_TOKENS`, never above the
expert's context, and cut to fit `coe.max_cost_usd`), its prompt at one token per UTF-8 byte,
and at the dearest expert it may reach. Since no call can cost more than it reserved, concurrent
requests never overrun a budget, on one gateway or on many sharing one Redis.
"""

from __future__ import annotations

import calendar
import math
import time
from collections.abc import Callable

from api.errors import BudgetExceeded, RateLimited
from api.routing import RoutingService
from api.schemas import ChatCompletionRequest
from api.store import ApiKey, Charge, RequestRecord, Store
from router.descriptor import ExpertDescriptor
from router.query import estimate_tokens, max_prompt_tokens

__all__ = ["Limiter", "completion_tokens", "nano_usd", "period_window", "token_limit"]

_DAY = 86_400


def nano_usd(usd: float) -> int:
    return round(usd * 1e9)


def period_window(period: str, now: float) -> tuple[str, int, float]:
    """The budget period's id, how long its counter is kept, and seconds until the next one."""
    t = time.gmtime(now)
    if period == "month":
        days = calendar.monthrange(t.tm_year, t.tm_mon)[1]
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        return time.strftime("%Y-%m", t), 62 * _DAY, start + days * _DAY - now
    start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    return time.strftime("%Y-%m-%d", t), 2 * _DAY, start + _DAY - now


def token_limit(expert: ExpertDescriptor, requested: int | None, default: int) -> int:
    """The `max_tokens` a call to `expert` starts from: the request's, else the expert's
    `default_max_tokens` from the pool, else the gateway's `default` (`COE_DEFAULT_MAX_TOKENS`);
    `completion_tokens` then fits it to the context and the cost cap."""
    return requested or expert.default_max_tokens or default


def completion_tokens(
    expert: ExpertDescriptor, max_tokens: int, prompt_bound: int, max_cost_usd: float | None
) -> int:
    """The `max_tokens` to send `expert`: the request's, never above the expert's context, and
    cut so that the call's worst case (`prompt_bound` prompt tokens, every completion token
    written) costs at most `max_cost_usd`. At least 1: a call that cannot fit the cap at all is
    for the router to exclude, not for this to make free."""
    tokens = min(max_tokens, expert.context_length)
    if max_cost_usd is not None and expert.output_price > 0:
        room = (max_cost_usd * 1e6 - prompt_bound * expert.input_price) / expert.output_price
        tokens = min(tokens, math.floor(room))
    return max(1, tokens)


class Limiter:
    def __init__(
        self,
        store: Store,
        routing: RoutingService,
        max_calls: Callable[[ChatCompletionRequest], int] | None = None,
        default_max_tokens: int = 512,
    ) -> None:
        self.store = store
        self.routing = routing
        #: How many expert calls a request may make (a composition, a cascade): the reservation
        #: covers all of them.
        self.max_calls = max_calls
        #: what a request without its own limit is sent with (`COE_DEFAULT_MAX_TOKENS`)
        self.default_max_tokens = default_max_tokens

    def estimate(self, request: ChatCompletionRequest) -> tuple[int, float]:
        """Tokens (for TPM: the prompt and the completion the router assumes) and the most USD
        this request can cost, before any expert is called."""
        messages = [m.model_dump() for m in request.messages]
        cap = request.coe.max_cost_usd if request.coe else None
        experts = self.routing.experts
        reachable = [experts[request.model]] if request.model in experts else experts.values()
        limits = {
            e.name: token_limit(e, request.completion_limit, self.default_max_tokens)
            for e in reachable
        }
        limit = max(limits.values(), default=self.default_max_tokens)
        calls = 1
        if request.model not in self.routing.experts and self.max_calls is not None:
            calls = self.max_calls(request)
        prompt = max_prompt_tokens(messages)
        if request.model == "coe-compose":  # later calls read the earlier answers
            prompt += (calls - 1) * (limit + 16)
        worst = max(
            (
                e.cost_usd(prompt, completion_tokens(e, limits[e.name], prompt, cap))
                for e in reachable
            ),
            default=0.0,
        )
        usd = calls * worst
        if cap is not None:  # the composition itself never spends past it
            usd = min(usd, cap)
        completion = min(limit, self.routing.expected_completion_tokens)
        return calls * (estimate_tokens(messages) + completion), usd

    async def admit(
        self, key: ApiKey | None, request: ChatCompletionRequest, now: float | None = None
    ) -> Charge | None:
        """Take this request from the key's limits, or raise `RateLimited`/`BudgetExceeded`.

        None for an open gateway or a key without limits: nothing to count or settle.
        """
        if key is None or (key.rpm is None and key.tpm is None and key.budget_usd is None):
            return None
        now = time.time() if now is None else now
        tokens, usd = self.estimate(request)
        period, ttl_s, period_left_s = period_window(key.period, now)
        charge = Charge(
            key_id=key.id,
            minute=str(int(now // 60)),
            period=period,
            period_ttl_s=ttl_s,
            tokens=tokens,
            nano_usd=math.ceil(usd * 1e9),
        )
        budget = None if key.budget_usd is None else nano_usd(key.budget_usd)
        refused = await self.store.admit(charge, key.rpm, key.tpm, budget)
        minute_left_s = 60 - now % 60
        if refused == "rpm":
            raise RateLimited(
                f"key {key.name!r} is limited to {key.rpm} requests per minute", minute_left_s
            )
        if refused == "tpm":
            raise RateLimited(
                f"key {key.name!r} is limited to {key.tpm} tokens per minute; this request "
                f"needs about {tokens}",
                minute_left_s,
                "tpm",
            )
        if refused == "budget":
            spent = await self.store.spent_nano_usd(key.id, period) / 1e9
            raise BudgetExceeded(
                f"key {key.name!r} has spent ${spent:.6f} of its ${key.budget_usd} budget for "
                f"this {key.period} (UTC); this request may cost up to ${usd:.6f}",
                period_left_s,
            )
        return charge

    async def settle(self, charge: Charge | None, record: RequestRecord) -> None:
        """Replace the estimates `admit` took by what `record` says the request used."""
        if charge is None:
            return
        used_tokens = record.prompt_tokens + record.completion_tokens
        await self.store.adjust(
            charge, used_tokens - charge.tokens, nano_usd(record.cost_usd) - charge.nano_usd
        )
