"""One async OpenAI chat-completions client for every expert of a pool.

`complete` returns a whole answer; `open_stream` returns an `ExpertStream` only once the expert
has sent its first event, so a caller can still fall back to another expert until then and never
after. The HTTP goes through an `experts.hop.Hop` (aiohttp in the product, httpx when a test
injects a transport); its errors are translated into `experts.errors` at this boundary.

Example::

    client = ExpertClient(httpx.AsyncClient(), engines, Timeouts(), hop=AiohttpHop())
    body = await client.complete("smollm2", {"messages": [{"role": "user", "content": "Hi"}]})
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from experts.engines.base import Engine
from experts.errors import ExpertHTTPError, ExpertTimeout, ExpertUnavailable
from experts.hop import Hop, HopError, HopResponse, HopTimeouts, HttpxHop
from experts.jsonio import dumps, loads
from experts.residency import ResidencyManager
from experts.scheduler import Scheduler
from experts.tracing import ExpertCall, expert_call

__all__ = ["ExpertClient", "ExpertStream", "Timeouts"]

Json = dict[str, Any]


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `read` bounds the wait for the first byte of an answer and between stream events."""

    connect: float = 5.0
    read: float = 120.0

    def hop(self) -> HopTimeouts:
        return HopTimeouts(connect=self.connect, read=self.read)


@contextlib.contextmanager
def _translated(expert: str) -> Iterator[None]:
    try:
        yield
    except HopError as exc:
        if exc.kind == "connect":
            raise ExpertUnavailable(expert, str(exc)) from exc
        if exc.kind == "timeout":
            raise ExpertTimeout(expert, f"no answer within the read timeout ({exc})") from exc
        raise ExpertUnavailable(expert, str(exc)) from exc


def _error_message(body: bytes) -> str:
    try:
        data = loads(body)
    except ValueError:
        return body.decode(errors="replace")[:500]
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            return str(err.get("message", err))[:500]
        return str(err)[:500]
    return str(data)[:500]


def _tool_calls_once(event: Json, named: set[tuple[int, int]]) -> None:
    """Some servers (llama-cpp-python) repeat a tool call's id, type and name in every streamed
    delta, and a deprecated `function_call` twin beside it; OpenAI sends them in the call's
    first delta only, and clients concatenate whatever repeats. Keep the first."""
    for choice in event.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict) or not delta.get("tool_calls"):
            continue
        delta.pop("function_call", None)
        for call in delta["tool_calls"]:
            key = (choice.get("index", 0), call.get("index", 0))
            if key not in named:
                named.add(key)
                continue
            call.pop("id", None)
            call.pop("type", None)
            if isinstance(call.get("function"), dict):
                call["function"].pop("name", None)


class ExpertStream:
    """An open SSE stream from an expert: the first chunk has arrived, the rest is iterated."""

    def __init__(
        self,
        expert: str,
        response: HopResponse,
        events: AsyncIterator[Json],
        first: Json,
        release: Callable[[], None],
        call: ExpertCall | None = None,
    ) -> None:
        self.expert = expert
        self._call = call or expert_call(expert)
        self.first = first
        self._response = response
        self._events = events
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[Json]:
        named: set[tuple[int, int]] = set()
        _tool_calls_once(self.first, named)
        self._call.piece(self.first)
        yield self.first
        with _translated(self.expert):
            async for event in self._events:
                _tool_calls_once(event, named)
                self._call.piece(event)
                yield event

    async def aclose(self) -> None:
        """Close the upstream connection (cancels generation there) and free the expert's slot."""
        try:
            await self._response.aclose()
        finally:
            self._call.end()
            if self._release is not None:
                self._release()
                self._release = None


async def _sse_events(response: HopResponse) -> AsyncIterator[Json]:
    lines = response.lines()
    async for line in lines:
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            # Read the body to its end: a response closed with unread bytes (the chunked
            # terminator) takes its connection down instead of back to the pool.
            async for _ in lines:
                pass
            return
        try:
            event = loads(data)
        except ValueError:
            continue  # keep-alive comments or junk lines carry nothing for the client
        if isinstance(event, dict):
            yield event


class ExpertClient:
    """Calls experts by name over one shared hop, bounding each one's concurrency."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        engines: Mapping[str, Engine],
        timeouts: Timeouts | None = None,
        scheduler: Scheduler | None = None,
        hop: Hop | None = None,
    ) -> None:
        """`scheduler` queues calls per expert and wakes asleep experts (`LivePool` passes the
        pool's); without one every expert is resident and only `max_concurrency` bounds calls.
        `hop` carries the calls (`LivePool` passes aiohttp's unless a test injected a
        transport); without one they go over `http`."""
        self.http = http
        self.engines = engines
        self.timeouts = timeouts or Timeouts()
        self.scheduler = scheduler or Scheduler(
            {n: e.config.max_concurrency for n, e in engines.items()},
            ResidencyManager(engines, http, max_resident=None),
        )
        self.hop: Hop = hop or HttpxHop(http)
        self._timeouts = self.timeouts.hop()

    @property
    def waiting(self) -> dict[str, int]:
        """Calls queued in the gateway per expert (for a slot, or for the expert to wake)."""
        return {n: self.scheduler.queued(n) for n in self.engines}

    def in_flight(self, expert: str) -> int:
        return self.scheduler.in_flight(expert)

    async def _post(
        self, expert: str, body: Json, stream: bool, call: ExpertCall, path: str
    ) -> HopResponse:
        engine = self.engines[expert]
        if not engine.alive():
            raise ExpertUnavailable(expert, "its local server process is not running")
        payload = engine.prepare({**body, "model": engine.config.served_model, "stream": stream})
        headers = engine.headers() | call.headers()
        return await self.hop.post(
            f"{engine.base_url}{path}", dumps(payload), headers, self._timeouts
        )

    async def _acquire(self, expert: str) -> None:
        await self.scheduler.acquire(expert)

    def _release(self, expert: str) -> None:
        self.scheduler.release(expert)

    def _span(self, expert: str) -> ExpertCall:
        config = self.engines[expert].config
        return expert_call(expert, (config.input_price, config.output_price))

    async def complete(self, expert: str, body: Json, path: str = "/chat/completions") -> Json:
        """The expert's whole answer as an OpenAI `chat.completion` object (or, with `path`
        `/completions` or `/embeddings`, that endpoint's object)."""
        await self._acquire(expert)
        call = self._span(expert)
        try:
            with _translated(expert):
                response = await self._post(expert, body, False, call, path)
                call.first_byte(response.status)
                content = await response.read()
            if response.status >= 400:
                raise ExpertHTTPError(expert, response.status, _error_message(content))
            try:
                data = loads(content)
            except ValueError as exc:
                raise ExpertHTTPError(expert, 502, "answer is not JSON") from exc
            listed = "data" if path == "/embeddings" else "choices"
            if not isinstance(data, dict) or not isinstance(data.get(listed), list):
                raise ExpertHTTPError(expert, 502, f"answer is not a {path[1:]} object")
            call.usage(data.get("usage"))
            return data
        except Exception as exc:
            call.failed(exc)
            raise
        finally:
            call.end()
            self._release(expert)

    async def open_stream(
        self, expert: str, body: Json, path: str = "/chat/completions"
    ) -> ExpertStream:
        """Start a streamed answer and wait for its first event (the fallback point)."""
        await self._acquire(expert)
        response: HopResponse | None = None
        call = self._span(expert)
        try:
            with _translated(expert):
                response = await self._post(expert, body, True, call, path)
                if response.status >= 400:
                    content = await response.read()
                    raise ExpertHTTPError(expert, response.status, _error_message(content))
                events = _sse_events(response)
                first = await anext(events, None)
                call.first_byte(response.status)  # a stream's first token: its first event
            if first is None:
                raise ExpertUnavailable(expert, "stream ended before the first event")
            if "error" in first:
                raise ExpertHTTPError(expert, 502, _error_message(dumps(first)))
        except BaseException as exc:
            call.failed(exc)
            call.end()
            if response is not None:
                await response.aclose()
            self._release(expert)
            raise
        release = lambda: self._release(expert)  # noqa: E731
        return ExpertStream(expert, response, events, first, release, call)
