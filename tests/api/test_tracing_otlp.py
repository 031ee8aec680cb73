"""Traces leave the gateway over real OTLP/HTTP: the SDK's exporter, configured only by the
standard environment, posts protobuf to a receiver on 127.0.0.1 that this test runs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from api.settings import Settings
from experts import tracing
from tests.api.conftest import GatewayFactory

pytestmark = pytest.mark.integration


class Receiver(ThreadingHTTPServer):
    """The smallest OTLP/HTTP trace receiver: `POST /v1/traces` with a protobuf body."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.exports: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[tuple[dict[str, Any], Any]]:
        """(resource attributes, span) for every span received."""
        out = []
        for export in self.exports:
            for resource_spans in export.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    out.extend((resource, s) for s in scope_spans.spans)
        return out


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.paths.append(self.path)
        assert self.headers["content-type"] == "application/x-protobuf"
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.exports.append(request)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


async def test_spans_reach_an_otlp_receiver_named_by_the_environment(
    receiver: Receiver, make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "coe-under-test")
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert Settings(_env_file=None).otel_exporter_otlp_endpoint == receiver.endpoint  # type: ignore[call-arg]
    async with make_gateway() as gw:
        assert tracing.enabled()
        body = {"model": "coe-auto", "messages": [{"role": "user", "content": "hi"}]}
        r = await gw.client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
    assert not tracing.enabled()  # the lifespan's end flushed the batch and switched it off
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    received = receiver.spans()
    assert {res["service.name"] for res, _ in received} == {"coe-under-test"}
    names = {s.name for _, s in received}
    assert {"POST /v1/chat/completions", "coe.routing", "coe.expert_call"} <= names
    root = next(s for _, s in received if s.name == "POST /v1/chat/completions")
    assert {s.trace_id for _, s in received} == {root.trace_id}
    request_id = next(a.value.string_value for a in root.attributes if a.key == "coe.request_id")
    assert request_id == r.headers["x-request-id"]
