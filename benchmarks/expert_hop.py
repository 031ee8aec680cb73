"""CPU per call of the gateway's hop to an expert, one HTTP client against another.

The instant fake expert of `gateway_overhead.py` runs in its own process (on CPU 0 with
`taskset`); this process (on CPU 1) calls it over loopback with each candidate client, whole
answers and streams, with 1 and `--concurrency` calls in flight, and prints the CPU this process
spent per call (what the gateway would spend on the hop, parsing the answer included) and calls
per second. CPU per call moves little with machine load; calls/s moves a lot.

    PYTHONPATH=. .venv/bin/python benchmarks/expert_hop.py --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.append(str(Path(__file__).resolve().parents[1]))  # PYTHONPATH's checkout wins
from benchmarks import gateway_overhead as bench

Call = Callable[[bool], Awaitable[int]]
PAYLOAD = {"model": bench.EXPERT, "messages": [{"role": "user", "content": "What is 2 + 2?"}],
           "max_tokens": 16}  # fmt: skip


def _events(lines: list[str]) -> int:
    """How many JSON events an SSE body's lines carry (what the gateway parses of a stream)."""
    count = 0
    for line in lines:
        if line.startswith("data:") and line[5:].strip() != "[DONE]":
            json.loads(line[5:])
            count += 1
    return count


async def _httpx(url: str, sharded: bool) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from experts.transport import ShardedTransport

    transport = ShardedTransport(512) if sharded else httpx.AsyncHTTPTransport()
    client = httpx.AsyncClient(transport=transport, timeout=30)
    target = httpx.URL(f"{url}/chat/completions")

    async def call(stream: bool) -> int:
        body = PAYLOAD | {"stream": stream}
        request = client.build_request("POST", target, json=body)
        response = await client.send(request, stream=stream)
        if not stream:
            return len(response.json()["choices"])
        try:
            return _events([line async for line in response.aiter_lines()])
        finally:
            await response.aclose()

    return call, client.aclose


async def _httpcore(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import httpcore

    pool = httpcore.AsyncConnectionPool(max_connections=512)
    target = f"{url}/chat/completions".encode()

    async def call(stream: bool) -> int:
        body = json.dumps(PAYLOAD | {"stream": stream}).encode()
        headers = [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")]
        async with pool.stream("POST", target, headers=headers, content=body) as response:
            raw = b"".join([chunk async for chunk in response.aiter_stream()])
        if not stream:
            return len(json.loads(raw)["choices"])
        return _events(raw.decode().splitlines())

    return call, pool.aclose


async def _aiohttp(url: str, orjson_: bool) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import aiohttp
    import orjson

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
    target = f"{url}/chat/completions"
    loads: Callable[[Any], Any] = orjson.loads if orjson_ else json.loads
    headers = {"content-type": "application/json"}

    async def call(stream: bool) -> int:
        data = orjson.dumps(PAYLOAD | {"stream": stream}) if orjson_ else json.dumps(
            PAYLOAD | {"stream": stream}).encode()  # fmt: skip
        async with session.post(target, data=data, headers=headers) as response:
            if not stream:
                return len(loads(await response.read())["choices"])
            count = 0
            async for line in response.content:
                if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                    loads(line[5:])
                    count += 1
            return count

    return call, session.close


async def _measure(
    call: Call, stream: bool, concurrency: int, seconds: float
) -> tuple[int, float, float]:
    """calls, CPU µs per call, calls/s."""
    for _ in range(50):
        await call(stream)
    stop = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call(stream)
            done += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return done, 1e6 * cpu / done, done / wall


async def _run(url: str, args: argparse.Namespace, console: Console) -> None:
    makers: dict[str, Callable[[], Awaitable[tuple[Call, Callable[[], Awaitable[None]]]]]] = {
        "httpx + ShardedTransport (main)": lambda: _httpx(url, True),
        "httpx, one pool": lambda: _httpx(url, False),
        "httpcore directly": lambda: _httpcore(url),
        "aiohttp, json": lambda: _aiohttp(url, False),
        "aiohttp, orjson": lambda: _aiohttp(url, True),
    }
    table = Table(title=f"One call to the fake expert ({args.seconds:.0f} s a cell)")
    for name in ("client", "mode", "in flight", "calls", "CPU µs/call", "calls/s"):
        table.add_column(name, justify="left" if name in {"client", "mode"} else "right")
    for name, make in makers.items():
        if args.only and not any(o in name for o in args.only.split(",")):
            continue
        call, close = await make()
        for stream in (False, True):
            for concurrency in (1, args.concurrency):
                n, cpu, rate = await _measure(call, stream, concurrency, args.seconds)
                table.add_row(name, "stream" if stream else "json", str(concurrency), str(n),
                              f"{cpu:.0f}", f"{rate:.0f}")  # fmt: skip
        await close()
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each cell")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight, loaded")
    parser.add_argument("--only", default="", help="comma-separated substrings of client names")
    args = parser.parse_args()
    port = bench._free_port()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coe-hop-")))
        fake = bench._pinned([sys.executable, bench.__file__, "--serve-fake", str(port)], "0")
        url = f"http://127.0.0.1:{port}/v1"
        stack.enter_context(
            bench._process(fake, f"{url}/models", tmp / "fake.log", dict(os.environ))
        )
        if (os.cpu_count() or 1) > 1:
            os.sched_setaffinity(0, {int(bench.GATEWAY_CPU)})
        console = Console(width=160)
        asyncio.run(_run(url, args, console))
        console.print(f"load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
