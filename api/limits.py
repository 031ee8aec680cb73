"""Per-key rate limits (requests and tokens per minute) and USD budgets (per day or month, UTC).

Before a request is routed, `Limiter.admit` takes one request, its estimated tokens and the most
its plan can cost (`Plan.worst_case`) from the key's windows in one atomic store call (a Lua
script on Redis), or refuses with 429 and `retry-after`. After it ends, `Limiter.settle`
replaces the reservation by what the request really used, so a budget is charged the real cost.

The reservation is a bound, not a guess: every call is reserved at the `max_tokens` it is sent
with (`api.tokens.completion_tokens`: the client's limit, else `COE_DEFAULT_MAX_TOKENS`, never
above the expert's context, and cut to fit `coe.max_cost_usd`), its prompt at one token per
UTF-8 byte, and at the dearest expert it may reach. Since no call can cost more than it
reserved, concurrent requests never overrun a budget, on one gateway or on many sharing one
Redis.
"""

from __future__ import annotations

import calendar
import functools
import math
import time

from api.errors import BudgetExceeded, RateLimited
from api.plan import Plan, Planner
from api.schemas import ChatCompletionRequest
from api.store import ApiKey, Charge, RequestRecord, Store

__all__ = ["Limiter", "nano_usd", "period_window"]

_DAY = 86_400


def nano_usd(usd: float) -> int:
    return round(usd * 1e9)


def period_window(period: str, now: float) -> tuple[str, int, float]:
    """The budget period's id, how long its counter is kept, and seconds until the next one."""
    name, ttl_s, end = _period_of_day(period, int(now // _DAY))
    return name, ttl_s, end - now


@functools.lru_cache(maxsize=8)
def _period_of_day(period: str, day: int) -> tuple[str, int, int]:
    """`period_window`'s id, counter lifetime and end (epoch seconds) for UTC day `day`: the
    same for every request of the day, so worked out once (gmtime, strftime and timegm were
    a per cent of a request's CPU)."""
    t = time.gmtime(day * _DAY)
    if period == "month":
        days = calendar.monthrange(t.tm_year, t.tm_mon)[1]
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        return time.strftime("%Y-%m", t), 62 * _DAY, start + days * _DAY
    start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    return time.strftime("%Y-%m-%d", t), 2 * _DAY, start + _DAY


class Limiter:
    """Admission: takes a plan's worst case from its key's windows (`admit`), and after the
    request the difference to what it really used (`settle`). `planner` shapes a bare request's
    plan for `estimate`; the limiter never routes and never calls an executor."""

    def __init__(self, store: Store, planner: Planner) -> None:
        self.store = store
        self.planner = planner

    def estimate(self, request: ChatCompletionRequest | Plan) -> tuple[int, float]:
        """What admission reserves for `request` (its plan's `worst_case`)."""
        plan = request if isinstance(request, Plan) else self.planner.shape(request)
        return plan.worst_case()

    async def admit(
        self, key: ApiKey | None, plan: Plan, now: float | None = None
    ) -> Charge | None:
        """Take `plan`'s worst case from the key's limits, or raise `RateLimited` or
        `BudgetExceeded`.

        None for an open gateway or a key without limits: nothing to count or settle.
        """
        if key is None or (key.rpm is None and key.tpm is None and key.budget_usd is None):
            return None
        now = time.time() if now is None else now
        tokens, usd = plan.worst_case()
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
