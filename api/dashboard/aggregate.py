"""Turn the request log and feedback of a time window into the dashboard's figures.

Pure functions over records (no I/O), so each figure is tested on hand-made logs. A window is cut
into equal buckets aligned to the clock (`WINDOWS`); rates per bucket divide by the bucket's full
width, so the newest, still-filling bucket reads low until it is complete.

Who a request counts for: traffic and routing share count a request once for each expert that
answered it (a composed answer counts for all of them); cost is split evenly among those experts
(the log keeps one total per request); latency is an expert's only for single-expert answers.
Requests no expert answered count under `NO_EXPERT`.

Example::

    frame = Frame.build(await store.requests(since=window_start(now, "1h")), "1h", now)
    traffic(frame).by_expert.series["alpha"]   # requests/min per bucket
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from api.dashboard.models import (
    CostReport,
    ExpertCost,
    ExpertLatency,
    ExpertLoad,
    KeyCost,
    LatencyReport,
    QualityReport,
    RoutingReport,
    Series,
    Summary,
    TrafficReport,
    Window,
)
from api.dashboard.sources import KeyBudget
from api.store import FeedbackRecord, RequestRecord

__all__ = [
    "NO_EXPERT",
    "NO_KEY",
    "WINDOWS",
    "Frame",
    "cost",
    "latency",
    "quality",
    "routing",
    "summary",
    "traffic",
    "window_start",
]

#: window → (length in seconds, bucket width in seconds): 30 to 96 points per chart.
WINDOWS: dict[str, tuple[int, int]] = {
    "5m": (300, 10),
    "15m": (900, 30),
    "1h": (3600, 60),
    "6h": (6 * 3600, 300),
    "24h": (24 * 3600, 900),
}
NO_EXPERT = "(unanswered)"
NO_KEY = "(none)"

_COLUMNS = [
    "ts",
    "request_id",
    "bucket",
    "model",
    "status",
    "latency_ms",
    "ttft_ms",
    "cost_usd",
    "key_id",
    "cache_hit",
    "fallback",
    "failed",
    "experts",
]

_DTYPES = {
    "ts": float,
    "status": int,
    "latency_ms": float,
    "ttft_ms": float,
    "cost_usd": float,
    "cache_hit": bool,
    "fallback": bool,
    "failed": bool,
}


def _grid(now: float, window: Window) -> tuple[float, int, int]:
    """First bucket start, bucket width and bucket count of `window` ending at `now`."""
    length, width = WINDOWS[window]
    count = length // width
    last = math.floor(now / width) * width
    return float(last - (count - 1) * width), width, count


def window_start(now: float, window: Window) -> float:
    """The oldest timestamp `window` shows: what to ask the store for (`since=`)."""
    return _grid(now, window)[0]


def _clean(values: Sequence[float] | np.ndarray | pd.Series) -> list[float | None]:
    return [None if v is None or not math.isfinite(float(v)) else float(v) for v in values]


def _opt(value: float) -> float | None:
    return None if value is None or not math.isfinite(float(value)) else float(value)


@dataclass(frozen=True)
class Frame:
    """A window's requests as a table (one row per request), with its bucket grid."""

    window: Window
    start: float
    end: float
    width: int
    count: int
    requests: pd.DataFrame

    @classmethod
    def build(cls, records: Sequence[RequestRecord], window: Window, now: float) -> Frame:
        start, width, count = _grid(now, window)
        rows = [
            (
                r.ts,
                r.request_id,
                0,
                r.model,
                r.status,
                r.latency_ms,
                np.nan if r.ttft_ms is None else r.ttft_ms,
                r.cost_usd,
                r.key_id or NO_KEY,
                r.cache_hit,
                bool(r.failed) and len(r.tried) > 1,  # RequestRecord.fallback, inlined
                r.status >= 400 or r.error is not None,
                list(r.experts),
            )
            for r in records
            if r.ts >= start
        ]
        df = pd.DataFrame(rows, columns=_COLUMNS).astype(_DTYPES)  # typed even when empty
        df["bucket"] = ((df["ts"] - start) // width).clip(0, count - 1).astype(int)
        return cls(window, start, now, width, count, df)

    @property
    def t(self) -> list[float]:
        return [self.start + i * self.width for i in range(self.count)]

    def series(self, columns: dict[str, list[float | None]]) -> Series:
        return Series(bucket_s=self.width, t=self.t, series=columns)

    def per_bucket(self, values: pd.Series, fill: float = np.nan) -> list[float | None]:
        """`values` indexed by bucket number → one value per bucket (empty → `fill`, NaN → null)."""
        return _clean(values.reindex(range(self.count), fill_value=fill).to_numpy(dtype=float))

    def by_expert(self) -> pd.DataFrame:
        """One row per (request, answering expert), with `share` = 1/k of a k-expert answer."""
        df = self.requests.assign(
            expert=[e if e else [NO_EXPERT] for e in self.requests["experts"]]
        )
        df["share"] = 1.0 / df["expert"].map(len)
        return df.explode("expert")

    @property
    def header(self) -> dict[str, object]:
        return {"window": self.window, "start": self.start, "end": self.end}


def _counts_per_min(frame: Frame, df: pd.DataFrame, key: str, weight: str | None) -> Series:
    if df.empty:
        return frame.series({})
    values = df[weight] if weight else pd.Series(1.0, index=df.index)
    table = values.groupby([df[key], df["bucket"]]).sum().unstack(fill_value=0.0)
    table = table.reindex(columns=range(frame.count), fill_value=0.0) * (60.0 / frame.width)
    return frame.series({str(name): _clean(row.to_numpy()) for name, row in table.iterrows()})


def _p(values: pd.Series, q: float) -> float | None:
    values = values.dropna()
    return float(np.percentile(values, q)) if len(values) else None


def _answered(frame: Frame) -> pd.DataFrame:
    df = frame.requests
    return df[~df["failed"] & (df["experts"].map(len) > 0)]


def summary(
    frame: Frame, feedback: Sequence[FeedbackRecord], experts_up: int, experts_total: int
) -> Summary:
    df, minutes = frame.requests, (frame.end - frame.start) / 60.0
    n = len(df)
    answered = _answered(frame)
    scores = [f.score for f in feedback if f.ts >= frame.start]
    spent = float(df["cost_usd"].sum())
    return Summary(
        **frame.header,
        requests=n,
        requests_per_min=n / minutes if minutes > 0 else 0.0,
        error_rate=_opt(df["failed"].mean()) if n else None,
        fallback_rate=_opt(df["fallback"].mean()) if n else None,
        cost_usd=spent,
        usd_per_hour=spent / (minutes / 60.0) if minutes > 0 else 0.0,
        usd_per_request=spent / n if n else None,
        latency_p50_ms=_p(answered["latency_ms"], 50),
        latency_p95_ms=_p(answered["latency_ms"], 95),
        ttft_p50_ms=_p(answered["ttft_ms"], 50),
        cache_hit_rate=_opt(df["cache_hit"].mean()) if n else None,
        feedback_count=len(scores),
        feedback_mean=float(np.mean(scores)) if scores else None,
        experts_up=experts_up,
        experts_total=experts_total,
    )


def traffic(frame: Frame) -> TrafficReport:
    df = frame.requests
    grouped = df.groupby("bucket")
    rates = {
        "error_rate": frame.per_bucket(grouped["failed"].mean()),
        "fallback_rate": frame.per_bucket(grouped["fallback"].mean()),
    }
    classes = (df["status"] // 100).map(lambda c: f"{c}xx").value_counts()
    return TrafficReport(
        **frame.header,
        by_expert=_counts_per_min(frame, frame.by_expert(), "expert", None),
        by_model=_counts_per_min(frame, df, "model", None),
        rates=frame.series(rates),
        status={str(k): int(v) for k, v in classes.sort_index().items()},
    )


def cost(frame: Frame, budgets: dict[str, KeyBudget] | None) -> CostReport:
    """USD/hour per expert over time, totals per expert and per key, budgets when known."""
    df, hours = frame.requests, (frame.end - frame.start) / 3600.0
    experts = frame.by_expert()
    experts = experts.assign(cost=experts["cost_usd"] * experts["share"])
    unanswered = experts["expert"] == NO_EXPERT
    if experts.loc[unanswered, "cost"].sum() == 0:  # refused or failed before any token: free
        experts = experts[~unanswered]
    per_hour = _counts_per_min(frame, experts, "expert", "cost")
    per_hour.series = {
        name: _clean(np.array(values, dtype=float) * 60.0)  # per minute → per hour
        for name, values in per_hour.series.items()
    }
    by_expert = [
        ExpertCost(
            expert=str(name),
            requests=float(g["share"].sum()),
            cost_usd=float(g["cost"].sum()),
            usd_per_request=float(g["cost"].sum() / g["share"].sum()),
            usd_per_hour=float(g["cost"].sum()) / hours if hours > 0 else 0.0,
        )
        for name, g in experts.groupby("expert")
    ]
    by_key = []
    for key, g in df.groupby("key_id"):
        spent = float(g["cost_usd"].sum())
        by_key.append(_key_cost(str(key), len(g), spent, (budgets or {}).get(str(key))))
    known = {k.key_id for k in by_key}
    for key, budget in sorted((budgets or {}).items()):
        if key not in known:  # a key with a budget and no traffic in the window still shows
            by_key.append(_key_cost(key, 0, 0.0, budget))
    return CostReport(
        **frame.header,
        usd_per_hour=per_hour,
        by_expert=sorted(by_expert, key=lambda e: -e.cost_usd),
        by_key=sorted(by_key, key=lambda k: -k.cost_usd),
        budgets=(
            "no keys configured"
            if budgets is None
            else "from the key store"
            if budgets
            else "no key has a budget"
        ),
    )


def _key_cost(key: str, n: int, spent: float, budget: KeyBudget | None) -> KeyCost:
    return KeyCost(
        key_id=key,
        requests=n,
        cost_usd=spent,
        usd_per_request=spent / n if n else None,
        budget_usd=budget.budget_usd if budget else None,
        budget_used_usd=budget.used_usd if budget else None,
        budget_used_share=(
            budget.used_usd / budget.budget_usd if budget and budget.budget_usd > 0 else None
        ),
        name=budget.name if budget else None,
        budget_period=budget.period if budget else None,
    )


def latency(frame: Frame) -> LatencyReport:
    answered = _answered(frame)
    single = answered[answered["experts"].map(len) == 1]
    single = single.assign(expert=single["experts"].map(lambda e: e[0]))
    by_expert = [
        ExpertLatency(
            expert=str(name),
            requests=len(g),
            p50_ms=_p(g["latency_ms"], 50),
            p95_ms=_p(g["latency_ms"], 95),
            ttft_p50_ms=_p(g["ttft_ms"], 50),
            ttft_p95_ms=_p(g["ttft_ms"], 95),
        )
        for name, g in single.groupby("expert")
    ]
    grouped = answered.groupby("bucket")["latency_ms"]
    return LatencyReport(
        **frame.header,
        by_expert=by_expert,
        over_time=frame.series(
            {
                "p50_ms": frame.per_bucket(grouped.quantile(0.5)),
                "p95_ms": frame.per_bucket(grouped.quantile(0.95)),
            }
        ),
    )


def routing(frame: Frame, load: list[ExpertLoad]) -> RoutingReport:
    answered = frame.by_expert()
    answered = answered[answered["expert"] != NO_EXPERT]
    share: dict[str, list[float | None]] = {}
    if not answered.empty:
        counts = answered.groupby(["expert", "bucket"]).size().unstack(fill_value=0)
        shares = counts / counts.sum(axis=0)
        share = {str(name): frame.per_bucket(row) for name, row in shares.iterrows()}
    df = frame.requests
    return RoutingReport(
        **frame.header,
        share=frame.series(share),
        cache_hit_rate=frame.series(
            {"cache_hit_rate": frame.per_bucket(df.groupby("bucket")["cache_hit"].mean())}
        ),
        cache_hit_rate_overall=_opt(df["cache_hit"].mean()) if len(df) else None,
        load=load,
    )


def quality(
    frame: Frame, feedback: Sequence[FeedbackRecord], experts_of: dict[str, list[str]]
) -> QualityReport:
    """Feedback per bucket, and its mean per expert that answered the judged request.

    `experts_of` maps request ids to the experts that answered them; feedback on a request the
    log no longer has still counts over time, just for no expert.
    """
    rows = [(f.ts, f.score, f.request_id) for f in feedback if f.ts >= frame.start]
    fb = pd.DataFrame(rows, columns=["ts", "score", "request_id"])
    fb["bucket"] = ((fb["ts"] - frame.start) // frame.width).clip(0, frame.count - 1).astype(int)
    grouped = fb.groupby("bucket")["score"]
    fb["expert"] = fb["request_id"].map(lambda rid: experts_of.get(rid) or [])
    judged = fb.explode("expert").dropna(subset=["expert"])
    return QualityReport(
        **frame.header,
        over_time=frame.series(
            {
                "mean_score": frame.per_bucket(grouped.mean()),
                "count": frame.per_bucket(grouped.size(), fill=0.0),
            }
        ),
        by_expert={str(k): float(v) for k, v in judged.groupby("expert")["score"].mean().items()},
        count=len(fb),
    )
