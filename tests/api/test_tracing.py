"""Traces: span names, their parent/child shape and attributes (in-memory exporter), the
traceparent sent upstream, and nothing at all while tracing is off."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api.settings import Settings
from api.tracing import TracingConfigError, configure, wanted
from experts import tracing
from experts.testing import FakeNetwork
from tests.api.conftest import GatewayFactory

HELLO = [{"role": "user", "content": "Say hello"}]
CHAT = "POST /v1/chat/completions"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider.get_tracer("test"))
    yield exporter
    tracing.disable()
    provider.shutdown()


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in exporter.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_a_routed_request_is_one_trace_with_its_steps(
    spans: InMemorySpanExporter, make_gateway: GatewayFactory
) -> None:
    async with make_gateway() as gw:
        r = await gw.client.post(
            "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
        )
    assert r.status_code == 200
    named = by_name(spans)
    root = named[CHAT][0]
    assert root.parent is None
    assert attrs(root)["coe.request_id"] == r.headers["x-request-id"]
    assert attrs(root)["http.response.status_code"] == 200
    for name in ("coe.admission", "coe.routing", "coe.expert_call"):
        (child,) = named[name]
        assert parent_of(child) == root.context.span_id, name
        assert child.context.trace_id == root.context.trace_id
    routing = attrs(named["coe.routing"][0])
    assert routing["coe.router"] == "cheapest" and routing["coe.expert"] == "alpha"
    assert routing["coe.predicted_quality"] == pytest.approx(r.json()["coe"]["scores"]["alpha"])
    assert routing["coe.estimated_cost_usd"] > 0
    call = attrs(named["coe.expert_call"][0])
    assert call["coe.expert"] == "alpha" and call["coe.attempt"] == 1
    assert call["coe.status"] == "ok" and call["http.response.status_code"] == 200
    assert (call["coe.prompt_tokens"], call["coe.completion_tokens"]) == (2, 3)
    assert call["coe.cost_usd"] == pytest.approx(r.json()["coe"]["cost_usd"])
    assert call["coe.ttft_ms"] > 0


async def test_each_attempt_is_a_span_and_the_traceparent_goes_upstream(
    spans: InMemorySpanExporter, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[httpx.Headers] = []
    deliver = FakeNetwork.handle_async_request

    async def recording(self: FakeNetwork, request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return await deliver(self, request)

    monkeypatch.setattr(FakeNetwork, "handle_async_request", recording)
    async with make_gateway() as gw:
        gw.network.down.add("alpha")
        r = await gw.client.post(
            "/v1/chat/completions", json={"model": "coe-auto", "messages": HELLO}
        )
    assert r.status_code == 200 and r.json()["coe"]["experts"] == ["beta"]
    calls = sorted(by_name(spans)["coe.expert_call"], key=lambda s: attrs(s)["coe.attempt"])
    assert [(attrs(s)["coe.expert"], attrs(s)["coe.status"]) for s in calls] == [
        ("alpha", "error"),
        ("beta", "ok"),
    ]
    assert "connection refused" in attrs(calls[0])["coe.error"]
    sent = [h["traceparent"].rsplit("-", 1)[0] for h in seen]  # version-trace-span(-flags)
    assert sent == [f"00-{s.context.trace_id:032x}-{s.context.span_id:016x}" for s in calls]


async def test_a_stream_span_covers_the_whole_answer_and_a_callers_trace_is_joined(
    spans: InMemorySpanExporter, make_gateway: GatewayFactory
) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with make_gateway() as gw:
        gw.fakes["alpha"].enqueue("one two three")
        r = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "alpha", "messages": HELLO, "stream": True},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
    assert r.status_code == 200 and "[DONE]" in r.text
    named = by_name(spans)
    root = named[CHAT][0]
    assert f"{root.context.trace_id:032x}" == trace_id
    assert f"{parent_of(root):016x}" == parent_id
    (call,) = named["coe.expert_call"]
    assert parent_of(call) == root.context.span_id
    assert attrs(call)["coe.completion_tokens"] == 3  # from the usage chunk at the very end
    assert call.end_time is not None and root.end_time is not None
    assert call.end_time <= root.end_time
    assert "coe.routing" not in named  # an expert named directly is not routed


async def test_composition_steps_nest_under_the_composition(
    spans: InMemorySpanExporter, make_gateway: GatewayFactory
) -> None:
    async with make_gateway() as gw:
        r = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "coe-compose", "messages": HELLO, "coe": {"k": 2, "strategy": "vote"}},
        )
    assert r.status_code == 200
    named = by_name(spans)
    (compose,) = named["coe.compose"]
    assert attrs(compose)["coe.strategy"] == "vote" and attrs(compose)["coe.k"] == 2
    steps = named["coe.compose.call"]
    assert sorted(attrs(s)["coe.expert"] for s in steps) == ["alpha", "beta"]
    assert all(parent_of(s) == compose.context.span_id for s in steps)
    step_ids = {s.context.span_id for s in steps}
    assert {parent_of(c) for c in named["coe.expert_call"]} == step_ids


def test_the_otel_environment_turns_tracing_on(monkeypatch: pytest.MonkeyPatch) -> None:
    def settings(**env: str) -> Settings:
        for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]

    assert not wanted(settings())
    assert wanted(settings(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:4318"))
    assert wanted(settings(OTEL_TRACES_EXPORTER="console"))
    assert not wanted(
        settings(OTEL_TRACES_EXPORTER="none", OTEL_EXPORTER_OTLP_ENDPOINT="http://x:4318")
    )
    assert settings(OTEL_SERVICE_NAME="coe-eu").otel_service_name == "coe-eu"
    with pytest.raises(TracingConfigError, match=r"'otlp'.*'console'"):
        configure(settings(OTEL_TRACES_EXPORTER="zipkin"))
    assert not tracing.enabled()


def test_with_tracing_off_the_sdk_is_never_imported(tmp_path: Path) -> None:
    """A whole request through the gateway, tracing off: the OpenTelemetry SDK and exporters stay
    unimported and the span helpers hand out their shared no-op objects."""
    script = textwrap.dedent(
        """
        import asyncio, sys, httpx, yaml
        from api.app import create_app
        from api.settings import Settings
        from experts import tracing
        from experts.testing import FakeExpert, FakeNetwork
        from tests.conftest import POOL

        async def main():
            open("pool.yaml", "w").write(yaml.safe_dump(POOL))
            fakes = {"alpha": FakeExpert("alpha"), "beta": FakeExpert("beta")}
            app = create_app(Settings(pool="pool.yaml", work_dir="w", _env_file=None),
                             transport=FakeNetwork(fakes))
            async with app.router.lifespan_context(app):
                client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                           base_url="http://gw")
                body = {"model": "coe-auto", "messages": [{"role": "user", "content": "hi"}]}
                assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
                body["stream"] = True
                assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
            assert tracing.span("x") is tracing.span("y")
            assert tracing.expert_call("a") is tracing.expert_call("b")
            # (FastAPI itself imports the OpenTelemetry API; the SDK is what tracing costs)
            sdk = ("opentelemetry.sdk", "opentelemetry.exporter")
            assert not [m for m in sys.modules if m.startswith(sdk)], "imported"
            print("clean")

        asyncio.run(main())
        """
    )
    env = {"PYTHONPATH": str(Path(__file__).parents[2]), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "clean"
