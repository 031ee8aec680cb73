"""`api.fastlane`: the hot routes answered without FastAPI, and exactly as FastAPI answers them.

A `+json` content type is one the fast lane leaves to FastAPI, so sending the same body under
both types compares the two paths through the same app, byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from api import fastlane
from api.errors import InvalidRequest, install_error_handlers
from api.fastlane import FastLane
from tests.conftest import Gateway

ASK = {"model": "coe-auto", "messages": [{"role": "user", "content": "2+2?"}]}
FAST = {"content-type": "application/json"}
SLOW = {"content-type": "application/vnd.coe+json"}  # FastAPI takes it, the fast lane does not


async def _both(gateway: Gateway, path: str, body: bytes) -> tuple[Any, Any]:
    fast = await gateway.client.post(path, content=body, headers=FAST)
    slow = await gateway.client.post(path, content=body, headers=SLOW)
    return fast, slow


async def test_a_decision_is_the_same_bytes_on_both_paths(gateway: Gateway) -> None:
    fast, slow = await _both(gateway, "/v1/route", json.dumps(ASK).encode())
    assert fast.status_code == slow.status_code == 200
    assert fast.content == slow.content
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"model": "coe-auto"}',
        b'{"model": "coe-auto", "messages": [{"role": "wizard", "content": "x"}]}',
        b'{"model": "coe-auto", "messages": [], "temperature": "hot"}',
        b'{"model": "no-such-expert", "messages": [{"role": "user", "content": "x"}]}',
        json.dumps(ASK | {"coe": {"router": "nope"}}).encode(),
    ],
)
@pytest.mark.parametrize("path", ["/v1/route", "/v1/chat/completions"])
async def test_every_error_is_the_same_on_both_paths(
    gateway: Gateway, path: str, body: bytes
) -> None:
    fast, slow = await _both(gateway, path, body)
    assert fast.status_code == slow.status_code
    assert fast.status_code >= 400
    assert fast.json() == slow.json()
    assert set(fast.json()) == {"error"}


async def test_a_chat_answer_is_the_same_on_both_paths(gateway: Gateway) -> None:
    fast, slow = await _both(gateway, "/v1/chat/completions", json.dumps(ASK).encode())
    assert fast.status_code == slow.status_code == 200
    changing = {"id", "created", "coe"}  # the request's own id, clock and latency
    assert {k: v for k, v in fast.json().items() if k not in changing} == {
        k: v for k, v in slow.json().items() if k not in changing
    }
    assert fast.json()["coe"]["experts"] == slow.json()["coe"]["experts"]


async def test_a_stream_is_served(gateway: Gateway) -> None:
    body = json.dumps(ASK | {"stream": True}).encode()
    r = await gateway.client.post("/v1/chat/completions", content=body, headers=FAST)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.text.rstrip().endswith("data: [DONE]")


async def test_the_body_limit_and_keys_still_apply(gateway: Gateway) -> None:
    huge = json.dumps(ASK | {"padding": "x" * 30_000}).encode()
    r = await gateway.client.post("/v1/route", content=huge, headers=FAST)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


# -- the middleware alone, around a stand-in app ---------------------------------------------


class _Inner:
    """The app behind the fast lane: records what reached it and the body it could read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.state = type("State", (), {"chat": object()})()
        self.exception_handlers: dict[Any, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        self.bodies.append(message.get("body", b""))
        await Response(b"inner")(scope, receive, send)


def _scope(inner: _Inner, path: str = "/v1/route", ctype: bytes = b"application/json",
           method: str = "POST") -> Scope:  # fmt: skip
    return {"type": "http", "method": method, "path": path, "root_path": "", "app": inner,
            "headers": [(b"content-type", ctype)], "query_string": b""}  # fmt: skip


def _receiver(*messages: Message) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    return receive


async def _call(inner: _Inner, scope: Scope, receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await FastLane(inner)(scope, receive, send)
    return sent


def _answered(sent: list[Message]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture
def handled(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The fast lane's `/v1/route` replaced by one that records the validated request."""
    seen: list[Any] = []

    async def handler(chat: Any, request: Any, key: Any) -> Response:
        seen.append(request)
        if request.model == "raise-api-error":
            raise InvalidRequest("no such thing", param="model")
        if request.model == "raise-bug":
            raise RuntimeError("a bug")
        return Response(b"fast")

    monkeypatch.setitem(fastlane.ROUTES, "/v1/route", handler)
    return seen


def _body(model: str = "coe-auto") -> Message:
    payload = {"model": model, "messages": [{"role": "user", "content": "x"}]}
    return {"type": "http.request", "body": json.dumps(payload).encode(), "more_body": False}


async def test_a_valid_body_never_reaches_fastapi(handled: list[Any]) -> None:
    inner = _Inner()
    sent = await _call(inner, _scope(inner), _receiver(_body()))
    assert _answered(sent) == b"fast" and inner.bodies == [] and len(handled) == 1


async def test_a_body_in_chunks_is_read_whole(handled: list[Any]) -> None:
    inner, whole = _Inner(), _body()["body"]
    chunks = [{"type": "http.request", "body": whole[:5], "more_body": True},
              {"type": "http.request", "body": whole[5:], "more_body": False}]  # fmt: skip
    sent = await _call(inner, _scope(inner), _receiver(*chunks))
    assert _answered(sent) == b"fast" and handled[0].model == "coe-auto"


async def test_an_invalid_body_is_replayed_to_fastapi(handled: list[Any]) -> None:
    inner = _Inner()
    message = {"type": "http.request", "body": b'{"model": 3}', "more_body": False}
    sent = await _call(inner, _scope(inner), _receiver(message))
    assert _answered(sent) == b"inner" and inner.bodies == [b'{"model": 3}'] and handled == []


@pytest.mark.parametrize(
    "scope_change",
    [{"path": "/v1/models"}, {"method": "GET"}, {"root_path": "/coe"},
     {"headers": [(b"content-type", b"text/plain")]}, {"headers": []}],
)  # fmt: skip
async def test_anything_else_goes_to_fastapi_untouched(
    handled: list[Any], scope_change: dict[str, Any]
) -> None:
    inner = _Inner()
    sent = await _call(inner, _scope(inner) | scope_change, _receiver(_body()))
    assert _answered(sent) == b"inner" and inner.bodies == [_body()["body"]] and handled == []


async def test_an_api_error_is_answered_by_the_apps_handler(handled: list[Any]) -> None:
    inner = _Inner()

    class App:  # the app's handlers, as `install_error_handlers` registers them
        def __init__(self) -> None:
            self.exception_handlers: dict[Any, Any] = {}

        def add_exception_handler(self, cls: Any, handler: Any) -> None:
            self.exception_handlers[cls] = handler

    app = App()
    install_error_handlers(app)  # type: ignore[arg-type]
    inner.exception_handlers = app.exception_handlers
    sent = await _call(inner, _scope(inner), _receiver(_body("raise-api-error")))
    assert sent[0]["status"] == 400
    assert json.loads(_answered(sent))["error"]["param"] == "model"


async def test_an_unexpected_error_goes_up_to_the_500_handler(handled: list[Any]) -> None:
    inner = _Inner()
    inner.exception_handlers = {Exception: lambda request, exc: None}  # Starlette's, not ours
    with pytest.raises(RuntimeError, match="a bug"):
        await _call(inner, _scope(inner), _receiver(_body("raise-bug")))


async def test_a_client_gone_mid_body_gets_no_answer(handled: list[Any]) -> None:
    inner = _Inner()
    partial = {"type": "http.request", "body": b'{"mod', "more_body": True}
    sent = await _call(inner, _scope(inner), _receiver(partial, {"type": "http.disconnect"}))
    assert sent == [] and handled == [] and inner.bodies == []
