"""What keys, limits, the cache and the request log cost per request, in memory and on Redis.

The gateway runs in-process over a fake expert that answers instantly (`experts.testing`), driven
through ASGI, so the numbers are the gateway's own work plus its Redis round trips, not network
or model time. Each configuration serves the same sequential requests; a table gives requests per
second and p50/p99 latency. Redis is the real one at `--redis-url` (db 7, a key prefix of this
run, deleted afterwards).

    .venv/bin/python benchmarks/store_overhead.py --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
import yaml
from rich.console import Console
from rich.table import Table

from api.app import create_app
from api.keys import new_key
from api.settings import Settings
from experts.testing import FakeExpert, FakeNetwork

POOL = {
    "experts": [
        {"name": "fake", "engine": "openai", "base_url": "http://fake/v1", "input_price": 1.0,
         "output_price": 2.0, "max_concurrency": 64},
    ]
}  # fmt: skip
CHAT = {"model": "coe-auto", "messages": [{"role": "user", "content": "What is 2+2?"}]}


async def measure(settings: Settings, n: int, key: bool, body: dict[str, Any]) -> list[float]:
    app = create_app(settings, transport=FakeNetwork({"fake": FakeExpert("fake")}))
    async with app.router.lifespan_context(app):
        headers = {}
        if key:
            name = f"bench-{uuid.uuid4().hex[:6]}"
            secret, record = new_key(name, rpm=10**9, tpm=10**12, budget_usd=1e9)
            await app.state.store.add_key(record)
            headers = {"authorization": f"Bearer {secret}"}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for _ in range(20):  # warm-up
                await client.post("/v1/chat/completions", json=body, headers=headers)
            latencies = []
            for _ in range(n):
                start = time.perf_counter()
                r = await client.post("/v1/chat/completions", json=body, headers=headers)
                latencies.append((time.perf_counter() - start) * 1000)
                assert r.status_code == 200, r.text
    return latencies


async def main(args: argparse.Namespace) -> None:
    prefix = f"coe-bench-{uuid.uuid4().hex[:8]}:"
    work = Path(tempfile.mkdtemp())
    pool = work / "pool.yaml"
    pool.write_text(yaml.safe_dump(POOL))
    base: dict[str, Any] = {"pool": pool, "work_dir": work, "_env_file": None}
    on_redis = {"redis_url": args.redis_url, "redis_prefix": prefix}
    cached = {**CHAT, "temperature": 0}
    configs = [
        ("memory, open", base, False, CHAT),
        ("memory, key + limits", base, True, CHAT),
        ("redis, open (log)", {**base, **on_redis}, False, CHAT),
        ("redis, key + limits", {**base, **on_redis}, True, CHAT),
        ("redis, key + limits, cache hit", {**base, **on_redis, "cache": "exact"}, True, cached),
    ]
    table = Table("configuration", "req/s", "p50 ms", "p99 ms")
    try:
        for name, settings, key, body in configs:
            latencies = np.array(await measure(Settings(**settings), args.requests, key, body))
            table.add_row(
                name,
                f"{1000 / latencies.mean():.0f}",
                f"{np.percentile(latencies, 50):.2f}",
                f"{np.percentile(latencies, 99):.2f}",
            )
    finally:
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    Console().print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/7")
    asyncio.run(main(parser.parse_args()))
