"""ASGI middleware: reject bodies over the size limit before they are read into memory."""

from __future__ import annotations

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PayloadTooLarge

__all__ = ["BodySizeLimit"]


class _TooLarge(HTTPException):
    """Raised from `receive`; an HTTPException so FastAPI's body parsing re-raises it as is."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            413, f"request body exceeds {max_bytes} bytes (setting COE_MAX_BODY_BYTES)"
        )


class BodySizeLimit:
    """413 in OpenAI's envelope when a request body exceeds `max_bytes`.

    Checks `content-length` up front, and counts the bytes of chunked bodies as they arrive.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"request body exceeds {self.max_bytes} bytes (setting COE_MAX_BODY_BYTES)"
        await PayloadTooLarge(message).response()(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
            return message

        # Only the body is read through `counting_receive`, and our routes read it before they
        # answer, so no response has started when `_TooLarge` arrives here; `send` is passed
        # as it is, not wrapped, to keep every streamed chunk one call cheaper. (FastAPI's own
        # max_body_size answers 413 in plain text, not in OpenAI's envelope.)
        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._reject(scope, receive, send)
