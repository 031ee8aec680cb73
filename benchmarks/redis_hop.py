"""CPU per call of the gateway's two Redis calls per request, one client against another.

The calls are the store's own: admission (`EVALSHA` of the limits script, as `RedisStore.admit`
sends it) and the request log's batch (per record the log script, per settling `INCRBY` +
`EXPIRE` twice, as `RedisStore.log_and_adjust` sends them). Each candidate client runs them
against the real Redis of `--redis-url` (keys under a prefix of this run, deleted afterwards),
with 1 and `--concurrency` admissions in flight, and this process's CPU time per call is
printed (what the gateway would spend; pinned to CPU 1 with `taskset` when it can, Redis is
wherever it runs). CPU per call moves little with machine load; calls/s moves a lot.

    PYTHONPATH=. .venv/bin/python benchmarks/redis_hop.py --redis-url redis://127.0.0.1:6379/8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from rich.console import Console
from rich.table import Table

sys.path.append(str(Path(__file__).resolve().parents[1]))  # PYTHONPATH's checkout wins
from api.store import redis as store_redis
from api.store.resp import PipelinedRedis, pack, pack_many

Call = Callable[[], Awaitable[Any]]
Client = tuple[Call, Call, Callable[[], Awaitable[None]]]  # admit, batch, close
RECORD = b'{"request_id":"r","ts":1.0,"model":"coe-auto","expert":"fake"}' * 8  # ~500 bytes


def _admit_args(prefix: str, slot: int) -> tuple[list[str], list[int | str]]:
    key_id = f"k{slot % 4}"
    keys = [f"{prefix}rpm:{key_id}:1", f"{prefix}tpm:{key_id}:1", f"{prefix}usd:{key_id}:d",
            f"{prefix}keys:revoked"]  # fmt: skip
    return keys, [10**9, 10**12, 10**18, 40, 1000, 172800, key_id]


def _batch(prefix: str, sha: str, size: int) -> list[tuple[Any, ...]]:
    commands: list[tuple[Any, ...]] = []
    for _ in range(size):
        keys = [f"{prefix}requests", f"{prefix}req:{uuid.uuid4().hex}"]
        commands.append(("EVALSHA", sha, 2, *keys, RECORD, 600, "MAXLEN", 10_000))
    for i in range(size):
        name = f"{prefix}tpm:k{i % 4}:1"
        commands += [("INCRBY", name, -3), ("EXPIRE", name, 120)]
    return commands


def _shas(url: str, prefix: str) -> tuple[str, str]:
    """The limits script's and the log script's shas, as the store sends them."""
    store = store_redis.RedisStore.from_url(url, prefix)
    return store._admit.sha, store._log.sha


async def _redis_py_script(url: str, prefix: str) -> Client:
    """Before: `RedisStore` as the product builds it (the script object, a blocking pool)."""
    store = store_redis.RedisStore.from_url(url, prefix)
    script, log = store._admit, store._log
    slot = 0

    async def admit() -> Any:
        nonlocal slot
        slot += 1
        keys, args = _admit_args(prefix, slot)
        return await script(keys=keys, args=args)

    async def batch() -> Any:
        async with store.redis.pipeline(transaction=False) as pipe:
            for command in _batch(prefix, log.sha, 32):
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)

    return admit, batch, store.redis.aclose


async def _redis_py_connection(url: str, prefix: str) -> Client:
    """redis-py's lower level: a connection per call in flight, the command packed by hiredis,
    `send_packed_command` + `read_response` (no pool checkout, no retry wrapper)."""
    free: list[aioredis.Connection] = []
    made: list[aioredis.Connection] = []
    options = aioredis.connection.parse_url(url)
    sha, log_sha = _shas(url, prefix)
    slot = 0

    async def take() -> aioredis.Connection:
        if free:
            return free.pop()
        conn = aioredis.Connection(host=options["host"], port=options["port"], db=options["db"])
        await conn.connect()
        made.append(conn)
        return conn

    async def admit() -> Any:
        nonlocal slot
        slot += 1
        keys, args = _admit_args(prefix, slot)
        conn = await take()
        try:
            await conn.send_packed_command(pack(("EVALSHA", sha, 4, *keys, *args)), False)
            return await conn.read_response()
        finally:
            free.append(conn)

    async def batch() -> Any:
        commands = _batch(prefix, log_sha, 32)
        conn = await take()
        try:
            await conn.send_packed_command(pack_many(commands), False)
            return [await conn.read_response() for _ in commands]
        finally:
            free.append(conn)

    async def close() -> None:
        for conn in made:
            await conn.disconnect()

    return admit, batch, close


async def _pipelined(url: str, prefix: str) -> Client:
    """After: `PipelinedRedis` (one connection, writes coalesced per loop turn, hiredis)."""
    client = PipelinedRedis.from_url(url)
    sha, log_sha = _shas(url, prefix)
    slot = 0

    async def admit() -> Any:
        nonlocal slot
        slot += 1
        keys, args = _admit_args(prefix, slot)
        return (await client.execute(pack(("EVALSHA", sha, 4, *keys, *args))))[0]

    async def batch() -> Any:
        commands = _batch(prefix, log_sha, 32)
        return await client.execute(pack_many(commands), len(commands))

    return admit, batch, client.aclose


async def _run(call: Call, in_flight: int, seconds: float) -> tuple[float, float]:
    """CPU µs per call and calls/s with `in_flight` callers in a closed loop."""
    for _ in range(50):
        await call()
    stop = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call()
            done += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return 1e6 * cpu / max(done, 1), done / wall


async def _main(args: argparse.Namespace) -> None:
    prefix = f"coe-hop-{uuid.uuid4().hex[:8]}:"
    setup = aioredis.Redis.from_url(args.redis_url)
    await setup.script_load(store_redis._ADMIT)
    await setup.script_load(store_redis._LOG)
    candidates = {
        "redis-py, script + pool (before)": _redis_py_script,
        "redis-py, Connection per slot": _redis_py_connection,
        "PipelinedRedis (hiredis, one connection)": _pipelined,
    }
    table = Table(title=f"CPU µs per call (calls/s); {args.seconds:g} s per cell")
    for column in ("client", "admit, 1", f"admit, {args.concurrency}", "batch of 32 + 32"):
        table.add_column(column, justify="left" if column == "client" else "right")
    try:
        for name, make in candidates.items():
            admit, batch, close = await make(args.redis_url, prefix)
            cells = []
            for call, in_flight in ((admit, 1), (admit, args.concurrency), (batch, 1)):
                us, rate = await _run(call, in_flight, args.seconds)
                cells.append(f"{us:,.0f} ({rate:,.0f}/s)")
            await close()
            table.add_row(name, *cells)
    finally:
        names = [n async for n in setup.scan_iter(match=f"{prefix}*", count=1000)]
        if names:
            await setup.delete(*names)
        await setup.aclose()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    Console(width=160).print(table, f"load average {load}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/8")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPU 1")
    args = parser.parse_args()
    if not args.no_pin and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {1})
    try:
        import uvloop  # the loop `coe serve` runs on (uvicorn picks it when installed)

        uvloop.run(_main(args))
    except ImportError:
        asyncio.run(_main(args))


if __name__ == "__main__":
    main()
