"""OpenTelemetry spans for coe's request path, free when tracing is off.

Tracing is off until `enable(tracer)` is called (the gateway does so at start when the standard
`OTEL_*` environment asks for it, see `api.tracing`). While it is off, `span()` returns one
shared do-nothing object and `expert_call()` another: no OpenTelemetry import, no allocation,
no context switch on the hot path. While it is on, they open real spans under the current one.

    with span("coe.routing", router="knn") as s:
        decision = ...
        s.set(expert=decision.ranked[0], predicted_quality=0.71)

Attribute keys are written without the `coe.` prefix and recorded with it (`coe.expert`).
`expert_call` is the span of one HTTP call to an expert (its attempt number, status, tokens,
cost, time to first token) and gives the W3C `traceparent` header to send upstream, so a vLLM or
llama.cpp trace joins the gateway's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import TracebackType
from typing import Any

__all__ = [
    "ExpertCall",
    "Span",
    "attempt",
    "disable",
    "enable",
    "enabled",
    "expert_call",
    "span",
    "tracer",
]

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_otel: Any = None  # the opentelemetry modules the spans need, imported by `enable`
_attempt: ContextVar[int] = ContextVar("coe_attempt", default=1)

Attr = str | bool | int | float


def _attrs(values: Mapping[str, Any]) -> dict[str, Attr]:
    """`coe.`-prefixed, OpenTelemetry-typed attributes; None values are left out."""
    out: dict[str, Attr] = {}
    for key, value in values.items():
        if value is None:
            continue
        name = key if "." in key else f"coe.{key}"
        out[name] = value if isinstance(value, str | bool | int | float) else str(value)
    return out


def enable(tracer: Any) -> None:
    """Turn tracing on with an OpenTelemetry `Tracer` (tests pass one over an in-memory
    exporter; `api.tracing.configure` one over the exporter the environment names)."""
    global _tracer, _otel
    import opentelemetry.propagate
    import opentelemetry.trace

    _otel = (opentelemetry.trace, opentelemetry.propagate)
    _tracer = tracer


def disable() -> None:
    global _tracer
    _tracer = None


def enabled() -> bool:
    return _tracer is not None


def tracer() -> Any:
    """The OpenTelemetry `Tracer` in use, or None while tracing is off."""
    return _tracer


class Span:
    """A started span (or, while tracing is off, the shared no-op one)."""

    def __init__(self, name: str = "", attributes: Mapping[str, Any] | None = None) -> None:
        self._name = name
        self._attributes = attributes
        self._cm: Any = None
        self._span: Any = None

    @property
    def recording(self) -> bool:
        """False for the no-op span: attributes that take work to build can be skipped."""
        return self._span is not None

    def set(self, **attributes: Any) -> None:
        if self._span is not None:
            self._span.set_attributes(_attrs(attributes))

    def error(self, message: str) -> None:
        """Mark the span failed (an exception leaving the `with` block does so by itself)."""
        if self._span is not None:
            trace, _ = _otel
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, message))

    def __enter__(self) -> Span:
        if _tracer is not None and self._name:
            self._cm = _tracer.start_as_current_span(
                self._name, attributes=_attrs(self._attributes or {})
            )
            self._span = self._cm.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._cm is not None:
            self._cm.__exit__(exc_type, exc, tb)


_NO_SPAN = Span()


def span(name: str, **attributes: Any) -> Span:
    """A span named `name` as a context manager, child of the current one; the shared no-op
    span while tracing is off."""
    if _tracer is None:
        return _NO_SPAN
    return Span(name, attributes)


@contextlib.contextmanager
def attempt(number: int) -> Iterator[None]:
    """Expert calls made inside are the `number`th attempt of their request (fallback)."""
    if _tracer is None:
        yield
        return
    token = _attempt.set(number)
    try:
        yield
    finally:
        _attempt.reset(token)


class ExpertCall:
    """The span of one call to an expert, from the request to the last byte of its answer.

    The client calls `first_byte()` when the answer (or a stream's first event) arrives,
    `usage()` with what the answer reports, `failed()` on an error, and `end()` once; for a
    stream `end()` runs when the stream is closed, so the span covers the whole answer.
    """

    def __init__(self, expert: str, prices: tuple[float, float] | None) -> None:
        self._span: Any = None
        if _tracer is None:
            return
        self._prices = prices
        self._started = time.perf_counter()
        self._tokens: tuple[int, int] | None = None
        self._pieces = 0
        self._failed = False
        self._span = _tracer.start_span(
            "coe.expert_call",
            kind=_otel[0].SpanKind.CLIENT,
            attributes=_attrs({"expert": expert, "attempt": _attempt.get()}),
        )

    def headers(self) -> dict[str, str]:
        """`traceparent` (and `tracestate`) naming this span, for the upstream request."""
        if self._span is None:
            return {}
        trace, propagate = _otel
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier

    def first_byte(self, status_code: int) -> None:
        if self._span is not None:
            ttft = (time.perf_counter() - self._started) * 1000
            self._span.set_attributes(
                _attrs({"http.response.status_code": status_code, "ttft_ms": round(ttft, 3)})
            )

    def piece(self, event: Mapping[str, Any]) -> None:
        """One streamed event: counts content pieces and keeps a usage chunk's counts."""
        if self._span is None:
            return
        usage = event.get("usage")
        if isinstance(usage, Mapping):
            self.usage(usage)
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            self._pieces += bool(delta.get("content") or delta.get("tool_calls"))

    def usage(self, usage: Mapping[str, Any] | None) -> None:
        if self._span is not None and usage and "prompt_tokens" in usage:
            self._tokens = (
                int(usage.get("prompt_tokens") or 0),
                int(usage.get("completion_tokens") or 0),
            )

    def failed(self, error: BaseException) -> None:
        if self._span is not None:
            trace, _ = _otel
            self._failed = True
            code = getattr(error, "status_code", None)
            status = "timeout" if "Timeout" in type(error).__name__ else "error"
            if isinstance(code, int) and 400 <= code < 500:
                status = "rejected"  # the request's fault: no other expert is tried
            self._span.record_exception(error)
            self._span.set_attributes(
                _attrs(
                    {
                        "status": status,
                        "error": str(error)[:500],
                        "http.response.status_code": code if isinstance(code, int) else None,
                    }
                )
            )
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, str(error)[:500]))

    def end(self) -> None:
        if self._span is None:
            return
        attributes: dict[str, Any] = {}
        if self._tokens is not None:
            prompt, completion = self._tokens
            attributes |= {"prompt_tokens": prompt, "completion_tokens": completion}
            if self._prices is not None:
                cost = (prompt * self._prices[0] + completion * self._prices[1]) / 1e6
                attributes["cost_usd"] = round(cost, 12)
        elif self._pieces:
            attributes["streamed_pieces"] = self._pieces
        if not self._failed:
            attributes["status"] = "ok"
        self._span.set_attributes(_attrs(attributes))
        self._span.end()
        self._span = None


_NO_CALL = ExpertCall("", None)


def expert_call(expert: str, prices: tuple[float, float] | None = None) -> ExpertCall:
    """The span of a call to `expert` (USD per 1M input and output tokens in `prices`, for its
    cost); the shared no-op call while tracing is off."""
    if _tracer is None:
        return _NO_CALL
    return ExpertCall(expert, prices)
