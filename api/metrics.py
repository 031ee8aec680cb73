"""Prometheus metrics for `GET /metrics`, one registry per app (tests never collide).

Counters and histograms are fed from the request log's records (`Metrics.observe`), so what the
dashboard shows and what Prometheus scrapes cannot disagree. Gauges of live state (per expert:
in flight, waiting, up, resident; the store's fallback) are read at scrape time from callables
registered with `Metrics.gauge`; a component with its own load board adds its gauges in one call::

    metrics.gauge("coe_expert_queue_depth", "requests queued per expert", ("expert",),
                  lambda: {(name,): q.depth for name, q in board.queues.items()})
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from api.store import RequestRecord
from experts.live import LivePool

__all__ = ["Metrics", "pool_gauges"]

#: Reads a gauge at scrape time: label values -> value.
GaugeRead = Callable[[], Mapping[tuple[str, ...], float]]

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


@dataclass(frozen=True)
class _Gauge:
    name: str
    doc: str
    labels: tuple[str, ...]
    read: GaugeRead


class _Gauges(Collector):
    def __init__(self) -> None:
        self.gauges: list[_Gauge] = []

    def collect(self) -> Iterable[Metric]:
        for gauge in self.gauges:
            family = GaugeMetricFamily(gauge.name, gauge.doc, labels=list(gauge.labels))
            for values, value in gauge.read().items():
                family.add_metric(list(values), float(value))
            yield family


class Metrics:
    def __init__(self, known_models: Collection[str] | None = None) -> None:
        """`known_models`: the names that label series as themselves (others: `unknown`)."""
        self.known_models = frozenset(known_models) if known_models is not None else None
        #: labelled children by (metric, label values): `labels()` validates and locks on every
        #: call, six times a request; the label sets are bounded (models, experts, statuses)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "coe_requests", "chat requests ended, by requested model, answering expert and "
            "HTTP status", ("model", "expert", "status"), registry=r
        )  # fmt: skip
        self.latency = Histogram(
            "coe_request_latency_seconds", "time from arrival to the last byte",
            ("model", "expert"), buckets=_LATENCY_BUCKETS, registry=r
        )  # fmt: skip
        self.ttft = Histogram(
            "coe_time_to_first_token_seconds", "streams: time from arrival to the first chunk",
            ("model", "expert"), buckets=_LATENCY_BUCKETS, registry=r
        )  # fmt: skip
        self.tokens = Counter(
            "coe_tokens", "tokens processed by experts", ("expert", "kind"), registry=r
        )
        self.cost = Counter("coe_cost_usd", "USD spent on experts", ("expert",), registry=r)
        self.decisions = Counter(
            "coe_routing_decisions", "the router's first choice, per router and expert",
            ("router", "expert"), registry=r
        )  # fmt: skip
        self.fallbacks = Counter(
            "coe_fallbacks", "requests where an expert failed and another was tried",
            ("model",), registry=r
        )  # fmt: skip
        self.cache = Counter(
            "coe_cache_lookups", "response cache lookups by kind (exact, semantic) and result",
            ("kind", "result"), registry=r
        )  # fmt: skip
        self.rejections = Counter(
            "coe_rejections", "requests refused before routing: auth, rpm, tpm, budget",
            ("reason",), registry=r
        )  # fmt: skip
        self._gauges = _Gauges()
        r.register(self._gauges)

    def gauge(self, name: str, doc: str, labels: Sequence[str], read: GaugeRead) -> None:
        """Add a gauge read by calling `read` at every scrape."""
        self._gauges.gauges.append(_Gauge(name, doc, tuple(labels), read))

    def _model(self, name: str) -> str:
        """A label value: the model's name if the gateway serves it, else `unknown` (a client
        may send any name; each would be a series kept forever)."""
        if self.known_models is None or name in self.known_models:
            return name
        return "unknown"

    def _child(self, metric: Counter | Histogram, *values: str) -> Any:
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def observe(self, record: RequestRecord) -> None:
        """Count one ended request from its request-log record."""
        expert = record.experts[0] if record.experts else ""
        model = self._model(record.model)
        self._child(self.requests, model, expert, str(record.status)).inc()
        if record.cache_hit:
            return  # no expert worked: latency, tokens and cost are not an expert's
        if record.status == 200 and expert:
            self._child(self.latency, model, expert).observe(record.latency_ms / 1000)
            if record.ttft_ms is not None:
                self._child(self.ttft, model, expert).observe(record.ttft_ms / 1000)
        if expert:  # what was paid, a stream the client left (499) included
            self._child(self.tokens, expert, "prompt").inc(record.prompt_tokens)
            self._child(self.tokens, expert, "completion").inc(record.completion_tokens)
            self._child(self.cost, expert).inc(record.cost_usd)
        if record.router and record.tried:
            self._child(self.decisions, record.router, record.tried[0]).inc()
        if record.fallback:
            self._child(self.fallbacks, model).inc()

    def cache_lookup(self, kind: str, hit: bool) -> None:
        self.cache.labels(kind, "hit" if hit else "miss").inc()

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def pool_gauges(metrics: Metrics, pool: LivePool) -> None:
    """The pool's live state per expert, from the scheduler's load board and the health board."""
    names = pool.names
    board = pool.load_board
    metrics.gauge(
        "coe_expert_in_flight", "calls in flight to each expert", ("expert",),
        lambda: {(n,): load.in_flight for n, load in board.snapshot().items()},
    )  # fmt: skip
    metrics.gauge(
        "coe_expert_queue_depth",
        "calls waiting in the gateway for each expert (for a slot, or for it to wake)",
        ("expert",), lambda: {(n,): load.queued for n, load in board.snapshot().items()},
    )  # fmt: skip
    metrics.gauge(
        "coe_expert_resident", "1 while the expert is loaded (awake), 0 while asleep or stopped",
        ("expert",), lambda: {(n,): float(load.resident) for n, load in board.snapshot().items()},
    )  # fmt: skip
    metrics.gauge(
        "coe_expert_loads", "times coe has loaded (started or woken) each expert", ("expert",),
        lambda: {(n,): float(load.loads) for n, load in board.snapshot().items()},
    )  # fmt: skip
    metrics.gauge(
        "coe_expert_up", "0 while the expert is marked failed and routed around, else 1",
        ("expert",), lambda: {(n,): float(not pool.health.is_down(n)) for n in names},
    )  # fmt: skip
