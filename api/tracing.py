"""Traces, configured by OpenTelemetry's own environment: nothing coe-specific to learn.

    OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 OTEL_SERVICE_NAME=coe-eu coe serve

Tracing is on when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`; `none` turns it
off) or, with none named, when an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). OTLP goes over HTTP/protobuf; the SDK reads its other
variables itself (headers, timeout, `OTEL_TRACES_SAMPLER`, `OTEL_RESOURCE_ATTRIBUTES`). Off by
default: then the SDK is not imported and the request path runs no tracing code beyond one
`is None` check per span site (`experts.tracing`).

Every request is one trace. `TraceRequests` opens its root (server) span, joins a caller's W3C
`traceparent`, and records the status and the `x-request-id` coe answered with; under it:

    POST /v1/chat/completions          coe.request_id, http.response.status_code
    ├── coe.admission                  key limits and budget reservation
    ├── coe.cache_lookup               coe.cache_hit (after coe.routing with a semantic cache)
    ├── coe.routing                    coe.router, coe.expert (chosen), coe.predicted_quality,
    │   │                              coe.estimated_cost_usd
    │   └── coe.embedding
    ├── coe.cascade / coe.compose      one coe.cascade.step / coe.compose.call per step
    └── coe.expert_call (each attempt) coe.expert, coe.attempt, coe.status, tokens, cost, TTFT;
                                       its traceparent goes upstream
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.settings import Settings
from experts import tracing

__all__ = ["TraceRequests", "TracingConfigError", "configure", "wanted"]


class TracingConfigError(ValueError):
    """The OTEL_* environment asks for tracing that this installation cannot do."""


def wanted(settings: Settings) -> bool:
    """Whether the environment asks for traces."""
    exporter = (settings.otel_traces_exporter or "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(settings.otel_exporter_otlp_endpoint)


def _exporters(settings: Settings) -> list[Any]:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    names = [n.strip().lower() for n in (settings.otel_traces_exporter or "otlp").split(",")]
    exporters: list[Any] = []
    for name in filter(None, names):
        if name == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise TracingConfigError(
                    "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: "
                    "pip install 'coe[otel]' (opentelemetry-exporter-otlp-proto-http)"
                ) from exc
            exporters.append(OTLPSpanExporter())
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={settings.otel_traces_exporter!r}: coe ships the "
                "'otlp' (HTTP/protobuf) and 'console' exporters; use one of them or 'none'"
            )
    return exporters


def configure(settings: Settings) -> Callable[[], None] | None:
    """Turn tracing on when the environment asks; returns what flushes and stops it (call it at
    shutdown), or None when tracing stays off. Raises `TracingConfigError` for an exporter this
    installation lacks."""
    if not wanted(settings):
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingConfigError(
            "the OTEL_* environment asks for traces but the OpenTelemetry SDK is not "
            "installed: pip install 'coe[otel]', or unset OTEL_TRACES_EXPORTER and "
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        ) from exc
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    for exporter in _exporters(settings):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    tracing.enable(provider.get_tracer("coe"))

    def shutdown() -> None:
        tracing.disable()
        provider.shutdown()  # flushes what is still batched

    return shutdown


class TraceRequests:
    """ASGI middleware: the root span of every HTTP request while tracing is on.

    Outermost, so the span covers authentication and, for a stream, every chunk sent.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = tracing.tracer()
        if scope["type"] != "http" or tracer is None:
            await self.app(scope, receive, send)
            return
        from opentelemetry import propagate, trace

        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        with tracer.start_as_current_span(
            f"{method} {path}",
            context=propagate.extract(headers),
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ) as span:

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR, f"HTTP {status}"))
                    for name, value in message.get("headers") or ():
                        if name == b"x-request-id":
                            span.set_attribute("coe.request_id", value.decode("latin-1"))
                await send(message)

            await self.app(scope, receive, traced_send)
