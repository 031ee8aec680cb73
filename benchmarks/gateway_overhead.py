"""What the gateway itself costs: latency and throughput with and without coe in the path.

A fake OpenAI expert that answers instantly (`experts.testing.FakeExpert` under uvicorn) is
called directly and through a real `coe serve`, at several concurrency levels, so whatever the
gateway adds (validation, routing, the upstream hop, re-serialising) is the difference between
the two. Everything runs on 127.0.0.1 in separate processes: the load generator, the fake and
the gateway do not share a GIL, but they do share the machine's cores, so compare rows from one
run rather than across machines.

    .venv/bin/python benchmarks/gateway_overhead.py --requests 300 --concurrency 1,4,16,64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

REPLY = "The answer to your question is four."
EXPERT = "fake"
PROMPT = [{"role": "user", "content": "What is two plus two?"}]


@dataclass(frozen=True)
class Row:
    """One measured (target, mode, concurrency) cell; latencies in milliseconds."""

    target: str
    stream: bool
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50: float
    p90: float
    p99: float
    cpu_ms: float  # CPU time the server process spent per request


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve_fake(port: int) -> None:
    """Child-process entry: the fake expert alone, without access logs that would slow it."""
    import uvicorn

    from experts.testing import FakeExpert

    app = FakeExpert(EXPERT, default=REPLY).app
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


@contextlib.contextmanager
def _process(argv: list[str], ready_url: str, log: Path, env: dict[str, str]) -> Iterator[int]:
    """Run `argv` until the block ends; yield its pid once `ready_url` answers 200."""
    with log.open("wb") as out:
        # stdout to a file, not a pipe: nobody reads a pipe while the benchmark runs, and a
        # full pipe would stall the server mid-measurement.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{argv[0]} exited {proc.returncode}:\n{log.read_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(ready_url, timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ready_url} not ready after 60 s:\n{log.read_text()}")
                time.sleep(0.2)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def _one(client: httpx.AsyncClient, body: dict[str, object]) -> bool:
    """One chat completion, read to the end; True when it succeeded."""
    if not body.get("stream"):
        response = await client.post("/chat/completions", json=body)
        return response.status_code == 200 and bool(response.json()["choices"])
    async with client.stream("POST", "/chat/completions", json=body) as response:
        done = False
        async for line in response.aiter_lines():
            done = done or line == "data: [DONE]"
        return response.status_code == 200 and done


async def _measure(
    base_url: str, model: str, stream: bool, concurrency: int, requests: int
) -> tuple[list[float], int, float]:
    """`requests` calls from `concurrency` workers; per-call latencies (s), errors, wall time."""
    body: dict[str, object] = {"model": model, "messages": PROMPT, "max_tokens": 16}
    if stream:
        body["stream"] = True
    # One client (one connection) per worker: a shared httpx pool costs the load generator
    # CPU that grows with the number of connections (11 ms a request at 64), which would be
    # measured as if the servers were slower.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30)
            )
            for _ in range(concurrency)
        ]
        for client in clients:  # open connections, warm caches
            await _one(client, body)
        latencies: list[float] = []
        errors = 0
        remaining = requests

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal remaining, errors
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                try:
                    ok = await _one(client, body)
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        return latencies, errors, time.perf_counter() - start


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(
    targets: dict[str, tuple[str, str, int]], levels: list[int], requests: int
) -> list[Row]:
    rows = []
    for concurrency in levels:
        for stream in (False, True):
            for target, (url, model, pid) in targets.items():
                cpu_before = _cpu_seconds(pid)
                lat, errors, wall = await _measure(url, model, stream, concurrency, requests)
                # includes the warm-up calls (one per worker) in the CPU but not in the count
                cpu_ms = 1000 * (_cpu_seconds(pid) - cpu_before) / (len(lat) + concurrency)
                p50, p90, p99 = np.percentile(np.array(lat) * 1000, [50, 90, 99])
                rows.append(
                    Row(target, stream, concurrency, len(lat), errors, len(lat) / wall,
                        p50, p90, p99, cpu_ms)
                )  # fmt: skip
    return rows


def _report(rows: list[Row], console: Console) -> None:
    table = Table(title="Chat completions against an instant fake expert (latency in ms)")
    columns = ("target", "mode", "conc", "req", "err", "req/s", "p50", "p90", "p99", "CPU ms/req")
    for name in columns:
        table.add_column(name, justify="left" if name in {"target", "mode"} else "right")
    for r in rows:
        mode = "stream" if r.stream else "json"
        table.add_row(
            r.target, mode, str(r.concurrency), str(r.requests), str(r.errors),
            f"{r.rps:.0f}", f"{r.p50:.2f}", f"{r.p90:.2f}", f"{r.p99:.2f}", f"{r.cpu_ms:.2f}",
        )  # fmt: skip
    console.print(table)

    added = Table(title="Added by the gateway (gateway − direct, ms) and throughput kept")
    for name in ("mode", "conc", "+p50", "+p99", "gateway/direct req/s", "gateway CPU ms/req"):
        added.add_column(name, justify="left" if name == "mode" else "right")
    cells = {(r.target, r.stream, r.concurrency): r for r in rows}
    for (target, stream, concurrency), gw in cells.items():
        if target != "gateway":
            continue
        direct = cells["direct", stream, concurrency]
        added.add_row(
            "stream" if stream else "json", str(concurrency),
            f"{gw.p50 - direct.p50:+.2f}", f"{gw.p99 - direct.p99:+.2f}",
            f"{gw.rps / direct.rps:.0%}", f"{gw.cpu_ms:.2f}",
        )  # fmt: skip
    console.print(added)
    for target in ("direct", "gateway"):
        best = max((r for r in rows if r.target == target), key=lambda r: r.rps)
        mode = "stream" if best.stream else "json"
        console.print(
            f"throughput ceiling, {target}: {best.rps:.0f} req/s ({mode}, concurrency "
            f"{best.concurrency})"
        )


def _coe_executable() -> str:
    beside = Path(sys.executable).with_name("coe")  # the venv this script runs in
    found = str(beside) if beside.exists() else shutil.which("coe")
    if found is None:
        raise SystemExit("the `coe` command is not installed: run `make install` first")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="measured requests per cell")
    parser.add_argument("--concurrency", default="1,4,16,64", help="comma-separated levels")
    parser.add_argument("--model", default="coe-auto", help="model asked of the gateway")
    parser.add_argument("--serve-fake", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        _serve_fake(args.serve_fake)
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    console = Console()

    fake_port, gateway_port = _free_port(), _free_port()
    with tempfile.TemporaryDirectory(prefix="coe-bench-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        pool = work / "pool.yaml"
        expert = {
            "name": EXPERT,
            "engine": "openai",
            "base_url": f"http://127.0.0.1:{fake_port}/v1",
            "max_concurrency": 256,
        }
        pool.write_text(yaml.safe_dump({"experts": [expert], "router": {"name": "cheapest"}}))
        # The gateway's access log is off (warning level) so that it is not what gets measured.
        env = {**os.environ, "COE_WORK_DIR": str(work / "coe"), "COE_LOG_LEVEL": "warning"}
        fake_argv = [sys.executable, __file__, "--serve-fake", str(fake_port)]
        fake_url = f"http://127.0.0.1:{fake_port}"
        fake_pid = stack.enter_context(
            _process(fake_argv, f"{fake_url}/v1/models", work / "fake.log", env)
        )
        gateway_argv = [_coe_executable(), "serve", "--pool", str(pool)]
        gateway_argv += ["--host", "127.0.0.1", "--port", str(gateway_port)]
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        gateway_pid = stack.enter_context(
            _process(gateway_argv, f"{gateway_url}/ready", work / "gw.log", env)
        )

        console.print(
            f"{args.requests} requests per cell, concurrency {levels}, {os.cpu_count()} CPUs; "
            f"gateway model {args.model!r} -> expert {EXPERT!r}"
        )
        targets = {
            "direct": (f"{fake_url}/v1", EXPERT, fake_pid),
            "gateway": (f"{gateway_url}/v1", args.model, gateway_pid),
        }
        rows = asyncio.run(_run(targets, levels, args.requests))
    _report(rows, console)


if __name__ == "__main__":
    main()
