"""Wire models of the dashboard's JSON endpoints (`/dashboard/api/*`), documented in OpenAPI.

Time series share one shape: `t` holds the start of each bucket (Unix seconds, `bucket_s` apart)
and every series in `series` has one value per bucket; `null` where a bucket has nothing to
average (no request answered, no feedback given), `0` where a count or a sum is zero.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "CostReport",
    "CurvePoint",
    "EvalReport",
    "EvalReports",
    "EvalRouter",
    "EvalSingle",
    "ExpertCost",
    "ExpertLatency",
    "ExpertLoad",
    "KeyCost",
    "LatencyReport",
    "QualityReport",
    "ReportError",
    "RoutingReport",
    "Series",
    "Summary",
    "TrafficReport",
    "Window",
]

#: The time windows the dashboard offers (`?window=`).
Window = Literal["5m", "15m", "1h", "6h", "24h"]


class Series(BaseModel):
    """Bucketed time series: one list of `len(t)` values per name."""

    bucket_s: int = Field(description="width of a bucket in seconds")
    t: list[float] = Field(description="bucket starts, Unix seconds, oldest first")
    series: dict[str, list[float | None]] = Field(default_factory=dict)


class _Windowed(BaseModel):
    window: Window
    start: float = Field(description="Unix time of the first bucket's start")
    end: float = Field(description="Unix time the figures were computed")


class Summary(_Windowed):
    """The headline figures of the window."""

    requests: int
    requests_per_min: float
    error_rate: float | None = Field(description="share of requests answered with status ≥ 400")
    fallback_rate: float | None = Field(
        description="share of requests where an expert failed and another was tried"
    )
    cost_usd: float
    usd_per_hour: float
    usd_per_request: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_p50_ms: float | None
    cache_hit_rate: float | None
    feedback_count: int
    feedback_mean: float | None = Field(description="mean feedback score in [0, 1]")
    experts_up: int
    experts_total: int


class TrafficReport(_Windowed):
    """Requests per minute by answering expert and by requested model; error and fallback rate."""

    by_expert: Series = Field(description="requests/min answered by each expert")
    by_model: Series = Field(description="requests/min by the `model` the client asked for")
    rates: Series = Field(description="`error_rate` and `fallback_rate` per bucket (0..1)")
    status: dict[str, int] = Field(description="requests by status class: 2xx, 4xx, 5xx")


class ExpertCost(BaseModel):
    expert: str
    requests: float = Field(description="requests (a composed one counts 1/k for each expert)")
    cost_usd: float
    usd_per_request: float | None
    usd_per_hour: float


class KeyCost(BaseModel):
    key_id: str = Field(description="the API key's id; `(none)` for requests without a key")
    name: str | None = Field(None, description="the key's name, where the key store knows it")
    requests: int
    cost_usd: float
    usd_per_request: float | None
    budget_usd: float | None = Field(None, description="the key's budget, when one is set")
    budget_used_usd: float | None = Field(None, description="spent against the budget")
    budget_used_share: float | None = Field(None, description="budget_used_usd / budget_usd")
    budget_period: str | None = Field(None, description="the budget's period: day or month")


class CostReport(_Windowed):
    usd_per_hour: Series = Field(description="USD/hour spent on each expert")
    by_expert: list[ExpertCost]
    by_key: list[KeyCost]
    budgets: str = Field(description="where budgets come from, or why there are none")


class ExpertLatency(BaseModel):
    expert: str
    requests: int
    p50_ms: float | None
    p95_ms: float | None
    ttft_p50_ms: float | None = Field(description="time to first token (streams only)")
    ttft_p95_ms: float | None


class LatencyReport(_Windowed):
    """Latency of answered single-expert requests (a composed answer has no one expert's)."""

    by_expert: list[ExpertLatency]
    over_time: Series = Field(description="p50_ms and p95_ms of all answered requests")


class ExpertLoad(BaseModel):
    expert: str
    up: bool = Field(description="not benched by the health board and its process is alive")
    in_flight: int = Field(description="calls being answered now")
    waiting: int = Field(description="calls queued for a free slot (queue depth)")
    max_concurrency: int
    resident: bool | None = Field(description="loaded and ready to answer; null when unknown")
    last_error: str | None = None


class RoutingReport(_Windowed):
    share: Series = Field(description="share (0..1) of answered requests each expert received")
    cache_hit_rate: Series = Field(description="`cache_hit_rate` per bucket (0..1)")
    cache_hit_rate_overall: float | None
    load: list[ExpertLoad] = Field(description="queue depth and residency per expert, now")


class QualityReport(_Windowed):
    over_time: Series = Field(description="`mean_score` (0..1) and `count` of feedback")
    by_expert: dict[str, float] = Field(description="mean feedback score per answering expert")
    count: int


class CurvePoint(BaseModel):
    cost_usd: float = Field(description="mean cost per query at this cost weight")
    accuracy: float
    cost_weight: float


class EvalRouter(BaseModel):
    name: str
    kind: Literal["router", "reference"]
    reference: Literal["best_single", "oracle"] | None = Field(
        description="set on the two references every router is judged against"
    )
    metrics: dict[str, float | None] = Field(description="the report's headline metrics")
    curve: list[CurvePoint] = Field(description="the λ sweep, sorted by cost")


class EvalSingle(BaseModel):
    model: str
    accuracy: float
    mean_cost_usd: float
    best: bool


class EvalReport(BaseModel):
    """One `coe eval` report (`report.json`) found under the reports directory."""

    id: str = Field(description="its folder relative to the reports directory")
    modified: float = Field(description="Unix time report.json was written")
    dataset: str
    n_train: int
    n_test: int
    costs_estimated: bool
    cost_note: str
    best_single: str
    cost_scale_usd: float
    routers: list[EvalRouter]
    singles: list[EvalSingle]


class ReportError(BaseModel):
    id: str
    error: str


class EvalReports(BaseModel):
    reports_dir: str | None = Field(description="COE_REPORTS_DIR; null when not set")
    reports: list[EvalReport] = Field(description="newest first")
    errors: list[ReportError] = Field(description="report.json files that could not be read")
