"""Python function calls per chat request: a measure of the gateway's work that machine load
does not change (unlike wall-clock throughput or CPU time on a shared machine), and the CPU time
per request of the same in-process run without the profiler (which load moves, but less than
throughput: compare checkouts run back to back, and run each more than once).

The gateway app runs in this process behind `httpx.ASGITransport` (no uvicorn), with Redis and
an API key with limits (the production configuration); the instant fake expert of
`gateway_overhead.py` runs in its own process. After a warm-up, cProfile counts every Python
function call (a coroutine's every resumption counts once) over `--requests` sequential
requests, including the in-process client's own calls, which are the same for every checkout.
Compare checkouts by running it with each on `PYTHONPATH`:

    PYTHONPATH=. .venv/bin/python benchmarks/call_count.py --redis-url redis://127.0.0.1:6379/7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import yaml

sys.path.append(str(Path(__file__).resolve().parents[1]))  # PYTHONPATH's checkout wins
from benchmarks import gateway_overhead as bench


async def _calls(
    pool: Path, work: Path, redis: tuple[str, str], key: str, stream: bool, n: int
) -> tuple[float, float]:
    """Python calls per request, then CPU µs per request (`n` requests each)."""
    from api.app import create_app
    from api.settings import Settings

    settings = Settings(pool=pool, work_dir=work, redis_url=redis[0], redis_prefix=redis[1])
    app = create_app(settings)
    body = bench._body(bench.EXPERT, stream).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {key}"}
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://coe") as client,
    ):

        async def one() -> None:
            response = await client.post("/v1/chat/completions", content=body, headers=headers)
            await response.aread()
            if response.status_code != 200:
                raise RuntimeError(f"{response.status_code}: {response.text}")

        for _ in range(50):
            await one()
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(n):
            await one()
        await asyncio.sleep(0.2)  # the log's flusher writes what the requests buffered
        profile.disable()
        cpu = time.process_time()
        for _ in range(n):
            await one()
        await asyncio.sleep(0.2)
        cpu = time.process_time() - cpu
    calls = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    return float(calls) / n, 1e6 * cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True, help="a Redis to use (a unique prefix)")
    parser.add_argument("--requests", type=int, default=300, help="requests counted per mode")
    args = parser.parse_args()
    prefix = f"coe-calls-{uuid.uuid4().hex[:8]}:"
    port = bench._free_port()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coe-calls-")))
        pool = tmp / "pool.yaml"
        expert = {"name": bench.EXPERT, "engine": "openai", "max_concurrency": 256,
                  "base_url": f"http://127.0.0.1:{port}/v1", "input_price": 1.0,
                  "output_price": 2.0}  # fmt: skip
        pool.write_text(yaml.safe_dump({"experts": [expert], "router": {"name": "cheapest"}}))
        fake = [sys.executable, str(Path(bench.__file__)), "--serve-fake", str(port)]
        ready = f"http://127.0.0.1:{port}/v1/models"
        stack.enter_context(bench._process(fake, ready, tmp / "fake.log", dict(os.environ)))
        key = bench._add_key(args.redis_url, prefix)
        stack.callback(bench._drop_prefix, args.redis_url, prefix)
        for stream in (False, True):
            calls, cpu_us = asyncio.run(
                _calls(pool, tmp / "coe", (args.redis_url, prefix), key, stream, args.requests)
            )
            mode = "stream" if stream else "json"
            print(f"{mode}: {calls:.0f} Python calls, {cpu_us:.0f} µs CPU per request")


if __name__ == "__main__":
    main()
