"""Faults under load: what a gateway loses when an expert dies, Redis goes away, clients leave,
gateways race for one budget, or hostile requests are mixed into normal traffic.

Everything runs on 127.0.0.1 in separate processes: fake experts (`python -m experts.testing`),
real `coe serve` gateways, and a Redis server of the benchmark's own on a free port (with an
append-only file, so that stopping and restarting it keeps the keys, as a real one would). The
shared Redis at 6379 is never touched. Counts and durations are bounded; one run takes a few
minutes. Each scenario prints requests sent, answered, failed (a non-2xx the scenario did not
expect), and money: the most the key's budget counter held while the scenario ran (reservations
included), what it holds at the end (settled), and the sum of the costs in the request log.

    .venv/bin/python benchmarks/faults.py                      # every scenario
    .venv/bin/python benchmarks/faults.py --scenarios kill,budget
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

from api.keys import new_key
from api.limits import nano_usd, period_window
from api.store.redis import RedisStore

HELLO = [{"role": "user", "content": "Say hello"}]
LONG = " ".join(f"w{i}" for i in range(600))  # longer than max_tokens: cut at the limit
HOSTILE_REPLY = "answer" + " " * 800  # took 1.7 s per answer parsed before issue 13


@dataclass
class Row:
    scenario: str
    sent: int = 0
    answered: int = 0
    failed: int = 0
    expected: str = ""  # refusals the scenario expects (budget 429s, 401s for bad keys)
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    held_usd: float | None = None
    settled_usd: float | None = None
    logged_usd: float | None = None
    verdict: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Call:
    started: float  # seconds since the load began
    latency_ms: float
    status: int


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready after 90 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


class Lab:
    """The processes of one run, all stopped when its `ExitStack` closes."""

    def __init__(self, work: Path, stack: contextlib.ExitStack) -> None:
        self.work = work
        self.stack = stack
        self.coe = str(Path(sys.executable).with_name("coe"))
        if not Path(self.coe).exists():
            raise SystemExit("the `coe` command is not installed: run `make install` first")
        self.redis_port = _free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.redis: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None) -> Any:
        log = self.work / f"{name}.log"
        out = self.stack.enter_context(log.open("ab"))
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.stack.callback(_stop, process)
        return process, log

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed")
        folder = self.work / "redis"
        folder.mkdir(exist_ok=True)
        argv = [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir",
                str(folder), "--appendonly", "yes", "--save", ""]  # fmt: skip
        self.redis, _ = self._spawn(argv, "redis")
        deadline = time.monotonic() + 10
        while not _redis_up(self.redis_port):
            if time.monotonic() > deadline:
                raise RuntimeError("our redis-server did not start")
            time.sleep(0.05)

    def stop_redis(self) -> None:
        if self.redis is not None:
            _stop(self.redis)
            self.redis = None

    def fake(self, name: str, reply: str, chunk_delay_s: float = 0.0) -> tuple[int, Any]:
        port = _free_port()
        argv = [sys.executable, "-m", "experts.testing", name, str(port), "--reply", reply,
                "--chunk-delay-s", str(chunk_delay_s)]  # fmt: skip
        process, log = self._spawn(argv, f"fake-{name}-{port}")
        _wait_ready(f"http://127.0.0.1:{port}/v1/models", process, log)
        return port, process

    def gateway(self, experts: list[dict[str, Any]], prefix: str, **env: str) -> str:
        port = _free_port()
        pool = self.work / f"pool-{port}.yaml"
        pool.write_text(yaml.safe_dump({"experts": experts, "router": {"name": "cheapest"}}))
        environment = {
            **os.environ,
            "COE_POOL": str(pool),
            "COE_PORT": str(port),
            "COE_WORK_DIR": str(self.work / f"gw-{port}"),
            "COE_LOG_LEVEL": "warning",
            "COE_REDIS_URL": self.redis_url,
            "COE_REDIS_PREFIX": prefix,
            "COE_REDIS_RETRY_S": "0.5",
            **env,
        }
        if env.get("COE_REDIS_URL") == "":
            environment.pop("COE_REDIS_URL")
        process, log = self._spawn([self.coe, "serve"], f"gw-{port}", environment)
        _wait_ready(f"http://127.0.0.1:{port}/ready", process, log)
        return f"http://127.0.0.1:{port}"

    def store(self, prefix: str) -> RedisStore:
        return RedisStore.from_url(self.redis_url, prefix=prefix, timeout_s=5.0)


def _redis_up(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _expert(name: str, port: int, price: float, concurrency: int = 64) -> dict[str, Any]:
    return {
        "name": name,
        "engine": "openai",
        "base_url": f"http://127.0.0.1:{port}/v1",
        "input_price": price,
        "output_price": 2 * price,
        "max_concurrency": concurrency,
    }


async def _post(client: httpx.AsyncClient, url: str, body: Any, headers: Any, t0: float) -> Call:
    """POST a chat request: `body` as JSON, or as bytes already encoded (a huge body is encoded
    once, not on the load generator's event loop while it times the others)."""
    started = time.perf_counter()
    try:
        if isinstance(body, bytes):
            headers = {**(headers or {}), "content-type": "application/json"}
            response = await client.post(
                f"{url}/v1/chat/completions", content=body, headers=headers
            )
        else:
            response = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
        status = response.status_code
    except httpx.HTTPError:
        status = 0  # no answer at all: the worst failure
    return Call(started - t0, (time.perf_counter() - started) * 1000, status)


async def _paced(
    client: httpx.AsyncClient,
    url: str,
    rate: float,
    duration_s: float,
    body: Any,
    headers: Any = None,
    at: dict[float, Callable[[], Awaitable[None]]] | None = None,
) -> list[Call]:
    """`rate` requests a second for `duration_s`; `at` runs actions at given seconds."""
    t0 = time.perf_counter()
    tasks: list[asyncio.Task[Call]] = []
    actions = sorted((at or {}).items())
    n = int(rate * duration_s)
    for i in range(n):
        due = t0 + i / rate
        while actions and time.perf_counter() - t0 >= actions[0][0]:
            await actions.pop(0)[1]()
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(_post(client, url, body, headers, t0)))
    for _, action in actions:
        await action()
    return list(await asyncio.gather(*tasks))


def _failures(calls: list[Call], expected: tuple[int, ...] = (200,)) -> str:
    """`failed: {status: count}` of the unexpected statuses (0: no answer at all), or ''."""
    odd: dict[int, int] = {}
    for c in calls:
        if c.status not in expected:
            odd[c.status] = odd.get(c.status, 0) + 1
    return f"failed statuses {odd}" if odd else ""


def _latencies(row: Row, calls: list[Call]) -> None:
    ok = [c.latency_ms for c in calls if 200 <= c.status < 300]
    if ok:
        row.p50_ms, row.p99_ms = (float(np.percentile(ok, q)) for q in (50, 99))


class Spend:
    """Samples a key's budget counter in Redis while a scenario runs (the most it held)."""

    def __init__(self, store: RedisStore, key_id: str) -> None:
        self.store, self.key_id, self.held = store, key_id, 0
        self.period = period_window("month", time.time())[0]
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # Redis may be down on purpose
                self.held = max(
                    self.held, await self.store.spent_nano_usd(self.key_id, self.period)
                )
            await asyncio.sleep(0.05)

    def __enter__(self) -> Spend:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def settle(self, row: Row) -> tuple[int, int]:
        """Fill the money columns; returns (settled, logged) in nano-USD."""
        settled = await self.store.spent_nano_usd(self.key_id, self.period)
        records = [r for r in await self.store.requests() if r.key_id == self.key_id]
        logged = sum(nano_usd(r.cost_usd) for r in records)
        row.held_usd, row.settled_usd = max(self.held, settled) / 1e9, settled / 1e9
        row.logged_usd = logged / 1e9
        return settled, logged


async def _key(store: RedisStore, name: str, budget_usd: float) -> tuple[dict[str, str], str]:
    secret, key = new_key(name, budget_usd=budget_usd, period="month")
    await store.add_key(key)
    return {"authorization": f"Bearer {secret}"}, key.id


# -- the scenarios -----------------------------------------------------------------------------


async def expert_killed(lab: Lab, client: httpx.AsyncClient) -> Row:
    """50 req/s for 8 s over two experts; the one routing prefers is SIGKILLed at 3 s."""
    row = Row("expert SIGKILLed at 50 req/s")
    alpha_port, alpha = lab.fake("alpha", "alpha says hi")
    beta_port, _ = lab.fake("beta", "beta says hi")
    url = lab.gateway([_expert("alpha", alpha_port, 1.0), _expert("beta", beta_port, 3.0)], "f1:")
    store = lab.store("f1:")
    headers, key_id = await _key(store, "kill", 100.0)

    async def kill() -> None:
        alpha.kill()

    with Spend(store, key_id) as spend:
        body = {"model": "coe-auto", "messages": HELLO}
        calls = await _paced(client, url, 50, 8, body, headers, at={3.0: kill})
        await asyncio.sleep(1)
        settled, logged = await spend.settle(row)
    row.sent, row.answered = len(calls), sum(c.status == 200 for c in calls)
    row.failed = row.sent - row.answered
    _latencies(row, calls)
    during = [c.latency_ms for c in calls if 3.0 <= c.started < 5.0 and c.status == 200]
    row.verdict.append(f"p99 in the 2 s after the kill {np.percentile(during, 99):.0f} ms")
    row.verdict.append("0 failed" if row.failed == 0 else _failures(calls))
    row.verdict.append("spend = log" if settled == logged else "spend != log")
    await store.aclose()
    return row


async def redis_outage(lab: Lab, client: httpx.AsyncClient) -> Row:
    """20 req/s for 18 s; Redis stopped at 3 s, started again at 13 s. Keys must hold (a bad
    key is 401 meanwhile) and, once Redis is back, its budget counter must equal the log."""
    row = Row("Redis down 10 s under load")
    alpha_port, _ = lab.fake("alpha", "alpha says hi")
    store = lab.store("f2:")
    headers, key_id = await _key(store, "outage", 100.0)  # before the gateway: it syncs keys
    url = lab.gateway([_expert("alpha", alpha_port, 1.0)], "f2:")
    wrong: list[int] = []

    async def stop() -> None:
        await asyncio.to_thread(lab.stop_redis)

    async def probe() -> None:
        for auth in ({}, {"authorization": "Bearer coe-not-a-key"}):
            call = await _post(client, url, {"model": "alpha", "messages": HELLO}, auth, 0.0)
            wrong.append(call.status)

    async def start() -> None:
        await asyncio.to_thread(lab.start_redis)

    body = {"model": "alpha", "messages": HELLO}
    with Spend(store, key_id) as spend:
        calls = await _paced(
            client, url, 20, 18, body, headers, at={3.0: stop, 8.0: probe, 13.0: start}
        )
        deadline = time.monotonic() + 30
        while (await client.get(f"{url}/ready")).json()["store"]["status"] != "ok":
            if time.monotonic() > deadline:
                row.verdict.append("Redis NOT back")
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)
        settled, logged = await spend.settle(row)
    row.sent, row.answered = len(calls), sum(c.status == 200 for c in calls)
    row.failed = row.sent - row.answered
    row.expected = f"{sum(s == 401 for s in wrong)}/{len(wrong)} bad keys 401"
    _latencies(row, calls)
    row.verdict.append("0 failed" if row.failed == 0 else _failures(calls))
    row.verdict.append("keys enforced" if set(wrong) == {401} else f"keys NOT enforced {wrong}")
    row.verdict.append("Redis = log" if settled == logged else f"Redis {settled} != log {logged}")
    await store.aclose()
    return row


async def budget_race(lab: Lab, client: httpx.AsyncClient) -> Row:
    """Two gateways on one Redis; 200 concurrent requests against a budget for 20 answers."""
    row = Row("2 gateways, 200 concurrent, budget for 20")
    alpha_port, _ = lab.fake("alpha", LONG)
    experts = [_expert("alpha", alpha_port, 1.0, concurrency=256)]
    urls = [lab.gateway(experts, "f3:"), lab.gateway(experts, "f3:")]
    store = lab.store("f3:")
    one = (2 * 1.0 + 512 * 2.0) / 1e6  # a full answer: 2 prompt words, 512 tokens
    headers, key_id = await _key(store, "race", 20 * one)
    body = {"model": "alpha", "messages": HELLO}
    with Spend(store, key_id) as spend:
        t0 = time.perf_counter()
        calls = await asyncio.gather(
            *(_post(client, urls[i % 2], body, headers, t0) for i in range(200))
        )
        await asyncio.sleep(1)
        settled, logged = await spend.settle(row)
    row.sent, row.answered = len(calls), sum(c.status == 200 for c in calls)
    refused = sum(c.status == 429 for c in calls)
    row.failed = row.sent - row.answered - refused
    row.expected = f"{refused} budget 429"
    _latencies(row, calls)
    budget = nano_usd(20 * one)
    row.verdict.append(f"spend {'<=' if settled <= budget else 'EXCEEDS'} budget ${20 * one:.6f}")
    row.verdict.append("spend = log" if settled == logged else "spend != log")
    await store.aclose()
    return row


async def clients_leave(lab: Lab, client: httpx.AsyncClient) -> Row:
    """200 streaming clients read 3 chunks of a ~60 s answer and hang up."""
    row = Row("200 clients leave mid-stream")
    port, _ = lab.fake("slow", " ".join(f"w{i}" for i in range(240)), chunk_delay_s=0.25)
    # (a connect timeout for a loaded machine: 200 connections opened at once to one fake)
    experts = [_expert("slow", port, 1.0, concurrency=256)]
    url = lab.gateway(experts, "f4:", COE_CONNECT_TIMEOUT_S="30")
    store = lab.store("f4:")
    headers, key_id = await _key(store, "leave", 100.0)
    body = {"model": "slow", "messages": HELLO, "stream": True}

    async def leave(t0: float) -> Call:
        started = time.perf_counter()
        status, chunks = 0, 0
        with contextlib.suppress(httpx.HTTPError):
            async with client.stream(
                "POST", f"{url}/v1/chat/completions", json=body, headers=headers
            ) as response:
                status = response.status_code
                async for line in response.aiter_lines():
                    chunks += line.startswith("data:")
                    if chunks >= 3:
                        break  # and hang up: the connection closes with the body unread
        return Call(started - t0, (time.perf_counter() - started) * 1000, status)

    with Spend(store, key_id) as spend:
        t0 = time.perf_counter()
        calls = await asyncio.gather(*(leave(t0) for _ in range(200)))
        await asyncio.sleep(5)  # the streams end on the gateway's side
        settled, logged = await spend.settle(row)
    records = [r for r in await store.requests() if r.key_id == key_id]
    left = [r for r in records if r.status == 499]
    ready = (await client.get(f"{url}/ready")).json()
    in_flight = ready["experts"]["slow"]["in_flight"]
    row.sent, row.answered = len(calls), sum(c.status == 200 for c in calls)
    row.failed = row.sent - row.answered
    row.expected = f"{len(left)} logged 499"
    _latencies(row, calls)
    paid = sum(r.cost_usd > 0 for r in left)
    statuses = {s: sum(r.status == s for r in records) for s in sorted({r.status for r in records})}
    row.verdict.append(f"logged statuses {statuses}")
    row.verdict.append(f"{paid}/{len(left)} of the 499s paid (cost > 0)")
    row.verdict.append(f"in flight after: {in_flight}")
    row.verdict.append("spend = log" if settled == logged else "spend != log")
    await store.aclose()
    return row


async def hostile_mix(lab: Lab, client: httpx.AsyncClient) -> Row:
    """Normal traffic (20 req/s, 6 s) alone, then with hostile requests mixed in at 5 req/s:
    a 1 MB model name, coe-compose with max_tokens 10^9, and votes over an expert whose reply
    is the regex-killer string. The normal requests' p99 must not move beyond noise."""
    row = Row("hostile inputs mixed in")
    alpha_port, _ = lab.fake("alpha", "alpha says 4")
    evil_port, _ = lab.fake("evil", HOSTILE_REPLY)
    experts = [_expert("alpha", alpha_port, 1.0), _expert("evil", evil_port, 0.5)]
    url = lab.gateway(experts, "f5:", COE_REDIS_URL="", COE_MAX_BODY_BYTES=str(4 << 20))
    normal = {"model": "alpha", "messages": HELLO}
    hostile: list[Any] = [
        json.dumps({"model": "m" * (1 << 20), "messages": HELLO}).encode(),
        {"model": "coe-compose", "messages": HELLO, "max_tokens": 10**9, "coe": {"k": 2}},
        {"model": "coe-compose", "messages": HELLO, "coe": {"k": 2, "strategy": "vote"}},
    ]
    alone = await _paced(client, url, 20, 6, normal)
    t0 = time.perf_counter()
    bad = [asyncio.create_task(_mixed(client, url, hostile, t0))]
    mixed = await _paced(client, url, 20, 6, normal)
    odd = await bad[0]
    row.sent = len(alone) + len(mixed) + len(odd)
    row.answered = sum(c.status == 200 for c in alone + mixed)
    row.failed = sum(c.status != 200 for c in alone + mixed) + sum(
        c.status in (0, 500) for c in odd
    )
    row.expected = f"hostile: {sorted({c.status for c in odd})}"
    _latencies(row, mixed)
    before = np.percentile([c.latency_ms for c in alone if c.status == 200], 99)
    row.verdict.append(f"normal p99 alone {before:.0f} ms, mixed {row.p99_ms:.0f} ms")
    return row


async def _mixed(client: httpx.AsyncClient, url: str, bodies: list[Any], t0: float) -> list[Call]:
    calls = []
    for i in range(30):  # 5 a second for 6 s, one at a time
        calls.append(await _post(client, url, bodies[i % len(bodies)], None, t0))
        await asyncio.sleep(0.2)
    return calls


SCENARIOS = {
    "kill": expert_killed,
    "redis": redis_outage,
    "budget": budget_race,
    "disconnect": clients_leave,
    "hostile": hostile_mix,
}


def _report(rows: list[Row], console: Console) -> None:
    table = Table(title="coe under faults (fake experts on 127.0.0.1; USD from our own Redis)")
    for name in ("scenario", "sent", "answered", "failed", "expected refusals", "p50 ms",
                 "p99 ms", "held $", "settled $", "logged $", "verdict"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("scenario", "verdict") else "right")

    def usd(value: float | None) -> str:
        return "-" if value is None else f"{value:.6f}"

    for r in rows:
        table.add_row(r.scenario, str(r.sent), str(r.answered), str(r.failed), r.expected,
                      f"{r.p50_ms:.0f}", f"{r.p99_ms:.0f}", usd(r.held_usd),
                      usd(r.settled_usd), usd(r.logged_usd), "; ".join(r.verdict))  # fmt: skip
    console.print(table)


async def _run(names: list[str], lab: Lab) -> list[Row]:
    lab.start_redis()
    rows = []
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        for name in names:
            rows.append(await SCENARIOS[name](lab, client))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    args = parser.parse_args()
    names = [n for n in args.scenarios.split(",") if n]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenarios {unknown}; choose from {sorted(SCENARIOS)}")
    console = Console(width=240)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="coe-faults-") as tmp, contextlib.ExitStack() as st:
        rows = asyncio.run(_run(names, Lab(Path(tmp), st)))
    _report(rows, console)
    console.print(f"load average before the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
