"""The two hot routes, `POST /v1/chat/completions` and `POST /v1/route`, served as plain ASGI.

For every request FastAPI matches the path against each route's regex, parses the content type
with `email.message`, decodes the JSON into Python objects and validates those, awaits one
function per dependency, and for `/v1/route` validates its own answer again before serialising
it. On a cache hit of `/v1/route` that machinery was about half of the gateway's CPU (profiled in
process; the README's Performance has the figures). `FastLane`, the innermost middleware, does
the same work once: the body is read into bytes, validated from those bytes by pydantic
(`model_validate_json`), the shared objects come from `app.state`, and the answer's bytes are
built once.

Whatever it would not answer exactly as FastAPI does goes on to FastAPI unchanged: other paths
and methods, a mounted app (`root_path`), a body that is not `application/json`, and every body
that does not validate (replayed, so FastAPI's validation answers it: the error shapes are its
own). FastAPI's routes stay registered, so the OpenAPI document does not change. An `APIError`
(or any exception the app has a handler for) is answered by the app's own handler, as FastAPI's
exception middleware would; anything else goes up to Starlette's 500 handler.

    app.add_middleware(FastLane)  # added first: innermost, inside auth and the size limit
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.pipeline import ChatPipeline
from api.routes import chat
from api.schemas import ChatCompletionRequest
from api.store import ApiKey

__all__ = ["FastLane"]

Handler = Callable[[ChatPipeline, ChatCompletionRequest, "ApiKey | None"], Awaitable[Response]]

#: What FastAPI serialises `/v1/route`'s `dict[str, Any]` answer with: the same bytes.
_DECISION_JSON = TypeAdapter(dict[str, Any])


async def _route(chat_: ChatPipeline, request: ChatCompletionRequest, _: ApiKey | None) -> Response:
    body = _DECISION_JSON.dump_json(await chat.decision(chat_, request))
    return Response(body, media_type="application/json")


async def _chat(
    chat_: ChatPipeline, request: ChatCompletionRequest, key: ApiKey | None
) -> Response:
    return await chat.answer(chat_, request, key)


#: The routes served here; FastAPI keeps its own definitions of them (OpenAPI, and the fallback).
ROUTES: dict[str, Handler] = {"/v1/chat/completions": _chat, "/v1/route": _route}


def _is_json(scope: Scope) -> bool:
    """The request says `application/json` (parameters such as a charset allowed). Any other
    spelling FastAPI accepts (`+json` types) is left to FastAPI."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json"
    return False


async def _read(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and False when the client went away before sending all of it (there is
    nobody to answer then)."""
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False) and message["type"] == "http.request":
        return body, True  # the usual case: one message
    chunks = [body]
    while message["type"] == "http.request" and message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks), message["type"] == "http.request"


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` with the body already read put back in front of it."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed


def _handler_for(app: Any, exc: Exception) -> Callable[..., Any] | None:
    """The app's handler for `exc`, looked up as Starlette's exception middleware does (the
    nearest class in its MRO); None for those only the 500 handler takes."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            handler: Callable[..., Any] = handlers[cls]
            return handler
    return None


class FastLane:
    """ASGI middleware: serve `ROUTES` directly, hand everything else on (see the module doc)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if (
            handler is None
            or scope["method"] != "POST"
            or scope.get("root_path")
            or not _is_json(scope)
        ):
            await self.app(scope, receive, send)
            return
        body, whole = await _read(receive)
        if not whole:
            return
        try:
            request = ChatCompletionRequest.model_validate_json(body)
        except ValidationError:  # FastAPI answers it, with its own error shapes
            await self.app(scope, _replay(body, receive), send)
            return
        app = scope["app"]
        key: ApiKey | None = scope.get("state", {}).get("api_key")
        try:
            response = await handler(app.state.chat, request, key)
        except Exception as exc:
            on_error = _handler_for(app, exc)
            if on_error is None:
                raise
            response = await on_error(Request(scope, receive), exc)
        await response(scope, receive, send)
