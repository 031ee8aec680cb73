"""`coe report`: the request log's figures in a terminal, from the Redis every replica logs to.

The same aggregations as the dashboard (`api.dashboard.aggregate`) over the same records, for an
operator with a shell and no browser, or a cron job that wants JSON::

    coe report --window 24h
    coe report --window 1h --json > last-hour.json
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import typer

from api.dashboard.aggregate import WINDOWS, Frame, cost, latency, summary, window_start
from api.dashboard.models import Window
from api.keys_cli import on_redis
from api.store import FeedbackRecord, RequestRecord, Store

__all__ = ["report"]

_NO_REDIS = (
    "coe report reads the request log that gateways write to Redis: set COE_REDIS_URL (or pass "
    "--redis-url). Without Redis each gateway keeps its log in memory: see its /dashboard."
)


def _money(usd: float | None) -> str:
    return "-" if usd is None else f"${usd:.6f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def report(window: str, as_json: bool, redis_url: str | None) -> None:
    """Requests, errors, cost and latency per expert and per API key over the last `window`
    (`coe report`, mounted in `api.cli` so that `coe --help` does not import pandas)."""
    if window not in WINDOWS:
        typer.echo(f"error: --window must be one of {', '.join(WINDOWS)}, not {window!r}", err=True)
        raise typer.Exit(2)
    now = time.time()
    since = window_start(now, cast(Window, window))

    async def fetch(store: Store) -> tuple[list[RequestRecord], list[FeedbackRecord]]:
        return await store.requests(since=since, limit=1_000_000), await store.feedback(since)

    records, feedback = on_redis(redis_url, fetch, without=_NO_REDIS)
    frame = Frame.build(records, cast(Window, window), now)
    head = summary(frame, feedback, experts_up=0, experts_total=0)
    spend, speed = cost(frame, None), latency(frame)
    if as_json:
        figures: dict[str, Any] = {
            "summary": head.model_dump(exclude={"experts_up", "experts_total"}),
            "cost": spend.model_dump(exclude={"usd_per_hour", "budgets"}),
            "latency": speed.model_dump(exclude={"over_time"}),
        }
        typer.echo(json.dumps(figures, indent=2))
        return
    _print(window, head, spend, speed)


def _print(window: str, head: Any, spend: Any, speed: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    console.print(
        f"[bold]last {window}[/]: {head.requests} requests ({head.requests_per_min:.2f}/min), "
        f"errors {_share(head.error_rate)}, fallbacks {_share(head.fallback_rate)}, "
        f"cache hits {_share(head.cache_hit_rate)}, spent {_money(head.cost_usd)} "
        f"({_money(head.usd_per_hour)}/h), feedback {head.feedback_count}"
        + (f" (mean {head.feedback_mean:.2f})" if head.feedback_mean is not None else "")
    )
    p50 = {e.expert: e for e in speed.by_expert}
    experts = Table("expert", "requests", "USD", "USD/request", "p50 ms", "p95 ms", "TTFT p50 ms")
    for e in sorted(spend.by_expert, key=lambda e: -e.cost_usd):
        lat = p50.get(e.expert)
        experts.add_row(
            e.expert,
            f"{e.requests:g}",
            _money(e.cost_usd),
            _money(e.usd_per_request),
            _ms(lat.p50_ms if lat else None),
            _ms(lat.p95_ms if lat else None),
            _ms(lat.ttft_p50_ms if lat else None),
        )
    console.print(experts)
    keys = Table("API key", "requests", "USD", "USD/request")
    for k in sorted(spend.by_key, key=lambda k: -k.cost_usd):
        keys.add_row(k.key_id, str(k.requests), _money(k.cost_usd), _money(k.usd_per_request))
    console.print(keys)
