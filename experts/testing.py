"""A fake OpenAI-compatible expert for tests and benchmarks: answers what a test enqueues.

It is a real ASGI app, so it runs in-process behind `httpx.ASGITransport` or on a real port
under uvicorn (`python -m experts.testing NAME PORT`, for benchmarks that kill experts). Never
used on the product's serving path.

Example::

    fake = FakeExpert("tiny")
    fake.enqueue("4")                     # next answer
    fake.enqueue_error(503, "overloaded") # the one after fails
    transport = httpx.ASGITransport(app=fake.app)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["FakeExpert", "FakeNetwork"]


@dataclass(frozen=True)
class _Error:
    status: int
    message: str


class FakeExpert:
    """Answers chat completions from a queue (or `default` when it is empty)."""

    def __init__(self, name: str = "fake", default: str = "ok", chunk_delay_s: float = 0.0) -> None:
        self.name = name
        self.default = default
        #: a pause before each streamed chunk (a stream that takes a while, for disconnects)
        self.chunk_delay_s = chunk_delay_s
        self.replies: deque[str | _Error] = deque()
        self.requests: list[dict[str, Any]] = []
        #: vLLM sleep mode: `/sleep`, `/wake_up`, `/is_sleeping`; chat answers 503 while asleep
        self.sleeping = False
        self.sleep_calls: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/sleep", self._sleep, methods=["POST"]),
                Route("/wake_up", self._wake_up, methods=["POST"]),
                Route("/is_sleeping", self._is_sleeping, methods=["GET"]),
            ]
        )

    def enqueue(self, *texts: str) -> None:
        self.replies.extend(texts)

    def enqueue_error(self, status: int, message: str = "fake failure") -> None:
        self.replies.append(_Error(status, message))

    async def _models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": self.name, "object": "model"}]})

    async def _sleep(self, request: Request) -> Response:
        self.sleep_calls.append(f"sleep level={request.query_params.get('level')}")
        self.sleeping = True
        return Response(status_code=200)

    async def _wake_up(self, request: Request) -> Response:
        self.sleep_calls.append("wake_up")
        self.sleeping = False
        return Response(status_code=200)

    async def _is_sleeping(self, request: Request) -> Response:
        return JSONResponse({"is_sleeping": self.sleeping})

    async def _completions(self, request: Request) -> Response:
        """Legacy completions: the next queued reply as `text` (streamed word by word)."""
        body = await request.json()
        self.requests.append(body)
        reply = self.replies.popleft() if self.replies else self.default
        if isinstance(reply, _Error):
            return JSONResponse({"error": {"message": reply.message}}, status_code=reply.status)
        prompt = len(str(body.get("prompt", "")).split())
        usage = {"prompt_tokens": prompt, "completion_tokens": len(reply.split()),
                 "total_tokens": prompt + len(reply.split())}  # fmt: skip
        base = {"id": "cmpl-fake", "object": "text_completion", "model": body.get("model")}
        if not body.get("stream"):
            choice = {"index": 0, "text": reply, "finish_reason": "stop"}
            return JSONResponse({**base, "choices": [choice], "usage": usage})

        async def events() -> AsyncIterator[bytes]:
            for word in reply.split(" "):
                choice = {"index": 0, "text": word, "finish_reason": None}
                yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n".encode()
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _embeddings(self, request: Request) -> Response:
        """A 4-dimensional vector per input from its length and characters (deterministic)."""
        body = await request.json()
        self.requests.append(body)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i,
             "embedding": [float(len(t)), float(sum(map(ord, t)) % 97), 1.0, 0.0]}
            for i, t in enumerate(map(str, inputs))
        ]  # fmt: skip
        tokens = sum(len(str(t).split()) for t in inputs)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": body.get("model"),
                             "usage": usage})  # fmt: skip

    async def _chat(self, request: Request) -> Response:
        if self.sleeping:
            return JSONResponse({"error": {"message": f"{self.name} is asleep"}}, status_code=503)
        body = await request.json()
        self.requests.append(body)
        reply = self.replies.popleft() if self.replies else self.default
        if isinstance(reply, _Error):
            return JSONResponse(
                {"error": {"message": reply.message, "type": "fake", "code": reply.status}},
                status_code=reply.status,
            )
        limit = body.get("max_tokens")
        if isinstance(limit, int) and len(reply.split(" ")) > limit:  # a word a token
            reply = " ".join(reply.split(" ")[:limit])
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reply.split()),
            "total_tokens": prompt_tokens + len(reply.split()),
        }
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": body.get("model")}
        if not body.get("stream"):
            message = {"role": "assistant", "content": reply}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return JSONResponse(
                {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            self._events(base, reply, usage if include_usage else None),
            media_type="text/event-stream",
        )

    async def _events(
        self, base: dict[str, Any], reply: str, usage: dict[str, int] | None
    ) -> AsyncIterator[bytes]:
        chunk = {**base, "object": "chat.completion.chunk"}
        words = reply.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        deltas = [{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]
        for delta in deltas:
            if self.chunk_delay_s:
                await asyncio.sleep(self.chunk_delay_s)
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            yield f"data: {json.dumps({**chunk, 'choices': [choice]})}\n\n".encode()
        final = {"index": 0, "delta": {}, "finish_reason": "stop"}
        yield f"data: {json.dumps({**chunk, 'choices': [final]})}\n\n".encode()
        if usage is not None:
            yield f"data: {json.dumps({**chunk, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"


class FakeNetwork(httpx.AsyncBaseTransport):
    """An `httpx` transport that delivers each request to the fake expert named by its host.

    A host with no fake refuses the connection, like a server that is down; `down` takes a
    fake off the network without forgetting it; `silent` hosts accept and never answer (the
    client's read timeout fires at once).
    """

    def __init__(self, experts: dict[str, FakeExpert]) -> None:
        self.experts = experts
        self.down: set[str] = set()
        self.silent: set[str] = set()
        self._transports = {h: httpx.ASGITransport(app=e.app) for h, e in experts.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down or host not in self._transports:
            raise httpx.ConnectError(f"connection refused by {host}", request=request)
        if host in self.silent:
            raise httpx.ReadTimeout(f"{host} sent nothing", request=request)
        return await self._transports[host].handle_async_request(request)


def main() -> None:
    """`python -m experts.testing NAME PORT [--reply TEXT] [--chunk-delay-s S]`: one fake
    expert on 127.0.0.1:PORT, answering `--reply` to everything."""
    import uvicorn

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("name")
    parser.add_argument("port", type=int)
    parser.add_argument("--reply", default="ok")
    parser.add_argument("--chunk-delay-s", type=float, default=0.0)
    args = parser.parse_args()
    fake = FakeExpert(args.name, args.reply, args.chunk_delay_s)
    uvicorn.run(fake.app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
