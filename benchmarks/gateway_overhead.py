"""What the gateway itself costs: throughput, latency and CPU per request, with coe in the path.

A fake OpenAI expert that answers instantly is called directly and through a real `coe serve`,
at several numbers of clients, so whatever the gateway adds (auth, limits, validation, routing,
the upstream hop, the request log) is the difference. The fake is nginx answering
`experts.testing.FakeExpert`'s own bytes (`--fake native`, the default when nginx is installed)
or `FakeExpert` itself under uvicorn (`--fake python`): under uvloop, uvicorn's p99 at 64
connections is many times its mean, which the direct rows, and every row through coe, carried.
Everything runs on 127.0.0.1 in separate processes. With `taskset` available the
layout is fixed: the fake expert and the load generator on CPU 0, the gateway alone on CPU 1
(`--workers 2` puts the gateway on both: then the generator shares its cores, say so when you
quote it). The load generator is `wrk` (closed loop: each connection sends its next request when
the previous answer ends), or a Python closed-loop generator in this process when wrk is absent.

`--redis-url` runs the production configuration: Redis on, an API key with limits on every
request (rpm, tpm, budget, all far above what the run uses). `--baseline DIR` measures another
checkout's gateway (say, main's) in the same run, step after step, so the two compare under the
same load; quote `uptime` beside the table, as this script prints it.

"unloaded" is one client that waits 100 ms after each answer; `--gaps 1,10,100` adds a row per
wait ("idle 10ms", ...). On a shared or virtual machine an unloaded request is slower than a
loaded one even with nothing to wait for: the process wakes on a CPU whose caches other work
has evicted, so the same Python runs about twice as long (the direct call to the fake expert
shows it too). The gap rows make that visible, so an unloaded figure is read against the direct
row of the same gap, never against the loaded row.

    .venv/bin/python benchmarks/gateway_overhead.py --clients 1,8,32,64 --seconds 10 \\
        --redis-url redis://127.0.0.1:6379/7 --baseline /work/main

`--route-clients 1` adds `POST /v1/route` rows (the decision alone), from wrk and from httpx
(`route httpx`: the client `routing_latency.py` measures a hit with); `--loops uvloop,asyncio`
measures this gateway on each event loop (`COE_LOOP`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
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
PROMPT = '[{"role":"user","content":"What is two plus two?"}]'
GENERATOR_CPU, GATEWAY_CPU = "0", "1"


@dataclass(frozen=True)
class Row:
    """One measured (target, mode, clients) cell; latencies in milliseconds."""

    target: str
    mode: str  # json | stream | unloaded (100 ms between requests) | idle <N>ms
    clients: int
    requests: int
    errors: int
    rps: float
    p50: float
    p90: float
    p99: float
    cpu_ms: float  # CPU time the server (all its processes) spent per request


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


# --- the native fake expert ---------------------------------------------------------------------

_NGINX_CONF = """daemon off;
master_process off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  client_body_buffer_size 64k;
  client_body_in_single_buffer on;
  # the answer depends on the body, which nginx reads only to proxy it: the outer server reads
  # it and names the answer in a header, the inner one returns that answer as it is
  map $request_body $coe_answer {{ default json; "~\\"stream\\"\\s*:\\s*true" sse; }}
  upstream coe_answers {{ server 127.0.0.1:{inner}; keepalive 256; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location = /v1/models {{ default_type application/json; return 200 '{models}'; }}
    location / {{
      proxy_pass http://coe_answers;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Coe-Answer $coe_answer;
      proxy_buffering off;
    }}
  }}
  server {{
    listen 127.0.0.1:{inner} backlog=4096;
    location / {{
      if ($http_x_coe_answer = sse) {{ rewrite ^ /coe-sse last; }}
      default_type application/json;
      return 200 '{json}';
    }}
    location = /coe-sse {{ default_type text/event-stream; return 200 '{sse}'; }}
  }}
}}
"""


def _nginx_string(body: bytes) -> str:
    """`body` as the inside of a single-quoted nginx string (`return 200 '...'`)."""
    text = body.decode()
    if "$" in text:  # nginx expands variables in `return`, and has no escape for `$`
        raise ValueError("an nginx `return` body cannot hold '$'")
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def _fake_answers() -> tuple[bytes, bytes]:
    """The Python fake's answers to the gateway's two requests, byte for byte: a chat completion,
    and a stream with its usage event (the gateway asks streams for usage)."""
    from experts.testing import FakeExpert

    fake = FakeExpert(EXPERT, default=REPLY)
    stream = f'{{"model":"{EXPERT}","messages":{PROMPT},"max_tokens":16,"stream":true,'
    stream += '"stream_options":{"include_usage":true}}'

    async def ask() -> tuple[bytes, bytes]:
        transport = httpx.ASGITransport(app=fake.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
            whole = await client.post("/v1/chat/completions", content=_body(EXPERT, False))
            events = await client.post("/v1/chat/completions", content=stream)
        return whole.content, events.content

    return asyncio.run(ask())


def _nginx_conf(root: Path, port: int, inner: int) -> str:
    """nginx answering as the fake expert does (same bytes), on `port`; `inner` is its own."""
    whole, events = _fake_answers()
    models = f'{{"object":"list","data":[{{"id":"{EXPERT}","object":"model"}}]}}'
    return _NGINX_CONF.format(root=root, port=port, inner=inner, models=models,
                              json=_nginx_string(whole), sse=_nginx_string(events))  # fmt: skip


def _fake_kind(choice: str) -> str:
    """`native` (nginx) or `python` (`FakeExpert` under uvicorn); `auto`: native if nginx is on
    PATH."""
    if choice == "auto":
        return "native" if shutil.which("nginx") else "python"
    if choice == "native" and shutil.which("nginx") is None:
        raise SystemExit("--fake native needs nginx on PATH (Debian: apt-get install nginx-light)")
    return choice


def _fake_argv(kind: str, port: int, tmp: Path) -> list[str]:
    if kind == "python":
        return [sys.executable, __file__, "--serve-fake", str(port)]
    root = tmp / "nginx"
    root.mkdir()
    conf = root / "nginx.conf"
    conf.write_text(_nginx_conf(root, port, _free_port()))
    return [
        str(shutil.which("nginx")),
        "-p",
        str(root),
        "-c",
        str(conf),
        "-e",
        str(root / "error.log"),
    ]


def _pinned(argv: list[str], cpus: str | None) -> list[str]:
    if cpus is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return argv
    return ["taskset", "-c", cpus, *argv]


@contextlib.contextmanager
def _process(argv: list[str], ready_url: str, log: Path, env: dict[str, str],
             cwd: Path | None = None) -> Iterator[int]:  # fmt: skip
    """Run `argv` (in `cwd`) until the block ends; yield its pid once `ready_url` answers 200.

    A gateway runs in its checkout's folder: `python -c` puts the working directory first on
    sys.path, before PYTHONPATH, so run from another checkout's root it would import that one."""
    with log.open("wb") as out:
        # stdout to a file, not a pipe: nobody reads a pipe while the benchmark runs, and a
        # full pipe would stall the server mid-measurement.
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        try:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{argv} exited {proc.returncode}:\n{log.read_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(ready_url, timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ready_url} not ready after 120 s:\n{log.read_text()}")
                time.sleep(0.2)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _tree_cpu_seconds(root: int) -> float:
    """User + system CPU time of `root` and every descendant (uvicorn workers), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += times.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


# --- load generators -------------------------------------------------------------------------

_WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}
wrk.body = [[{body}]]
{delay}
done = function(summary, latency, requests)
  io.write(string.format("COE %d %d %f %f %f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000))
end
"""


def _gap_ms(mode: str) -> int | None:
    """The wait between one client's requests in an unloaded mode; None: a closed loop."""
    if mode == "unloaded":
        return 100
    match = re.fullmatch(r"idle (\d+)ms", mode)
    return int(match[1]) if match else None


def _path(mode: str) -> str:
    """`route`: the routing decision alone (`POST /v1/route`, no expert called); `route
    httpx`: the same from this process's httpx client, as `routing_latency.py` measures a hit."""
    return "/route" if mode.startswith("route") else "/chat/completions"


def _body(model: str, stream: bool) -> str:
    flag = ',"stream":true' if stream else ""
    return f'{{"model":"{model}","messages":{PROMPT},"max_tokens":16{flag}}}'


def _wrk(
    url: str, model: str, mode: str, clients: int, seconds: float, key: str | None, tmp: Path
) -> tuple[int, int, float, float, float, float]:
    """requests, errors, req/s, p50, p90, p99 (ms) from one wrk run."""
    script = tmp / f"wrk-{uuid.uuid4().hex[:6]}.lua"
    gap = _gap_ms(mode)
    script.write_text(
        _WRK_SCRIPT.format(
            auth=f'wrk.headers["Authorization"] = "Bearer {key}"' if key else "",
            body=_body(model, mode == "stream"),
            delay="" if gap is None else f"delay = function() return {gap} end",
        )
    )
    argv = _pinned(
        ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
         "-s", str(script), f"{url}{_path(mode)}"],
        GENERATOR_CPU,
    )  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^COE (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+)$", out, re.M)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None or rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    n, errors = int(match[1]), int(match[2])
    return n, errors, float(rate[1]), float(match[3]), float(match[4]), float(match[5])


async def _python_load(
    url: str, model: str, mode: str, clients: int, seconds: float, key: str | None
) -> tuple[int, int, float, float, float, float]:
    """The same closed loop as wrk, from this process (when wrk is not installed)."""
    body = _body(model, mode == "stream").encode()
    headers = {"content-type": "application/json"} | (
        {"authorization": f"Bearer {key}"} if key else {}
    )
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    gap = _gap_ms(mode)

    async def worker() -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    response = await client.post(_path(mode), content=body, headers=headers)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                errors += not ok
                if gap is not None:
                    await asyncio.sleep(gap / 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    p50, p90, p99 = np.percentile(np.array(latencies) * 1000, [50, 90, 99])
    return len(latencies), errors, len(latencies) / wall, p50, p90, p99


def _measure(
    target: str, url: str, model: str, pid: int, mode: str, clients: int, args: argparse.Namespace,
    key: str | None, tmp: Path,
) -> Row:  # fmt: skip
    cpu_before = _tree_cpu_seconds(pid)
    if shutil.which("wrk") and not args.python_load and mode != "route httpx":
        n, errors, rps, p50, p90, p99 = _wrk(url, model, mode, clients, args.seconds, key, tmp)
    else:
        n, errors, rps, p50, p90, p99 = asyncio.run(
            _python_load(url, model, mode, clients, args.seconds, key)
        )
    cpu_ms = 1000 * (_tree_cpu_seconds(pid) - cpu_before) / max(n, 1)
    return Row(target, mode, clients, n, errors, rps, p50, p90, p99, cpu_ms)


# --- setup -------------------------------------------------------------------------------------


def _add_key(redis_url: str, prefix: str) -> str:
    """An API key with limits far above the run's needs, in the Redis the gateways share."""
    from api.keys import new_key
    from api.store.redis import RedisStore

    async def add() -> str:
        store = RedisStore.from_url(redis_url, prefix)
        secret, key = new_key("bench", rpm=10**9, tpm=10**12, budget_usd=1e9)
        await store.add_key(key)
        await store.aclose()
        return secret

    return asyncio.run(add())


def _drop_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for name in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(name)
    client.close()


def _gateway_argv(pool: Path, port: int, workers: int) -> list[str]:
    argv = [sys.executable, "-c", "from api.cli import main; main()", "serve", "--pool", str(pool)]
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        argv += ["--workers", str(workers)]
    return argv


def _report(rows: list[Row], console: Console, load: str) -> None:
    table = Table(title=f"Chat completions against an instant fake expert (ms); {load}")
    columns = ("target", "mode", "clients", "req", "err", "req/s", "p50", "p90", "p99")
    columns += ("CPU ms/req",)
    for name in columns:
        table.add_column(name, justify="left" if name in {"target", "mode"} else "right")
    for r in rows:
        table.add_row(
            r.target, r.mode, str(r.clients), str(r.requests), str(r.errors),
            f"{r.rps:.0f}", f"{r.p50:.2f}", f"{r.p90:.2f}", f"{r.p99:.2f}", f"{r.cpu_ms:.2f}",
        )  # fmt: skip
    console.print(table)
    direct = {(r.mode, r.clients): r for r in rows if r.target == "direct"}
    added = Table(title="Added by each gateway over the direct call (ms)")
    for name in ("target", "mode", "clients", "+p50", "+p99", "req/s kept"):
        added.add_column(name, justify="left" if name in {"target", "mode"} else "right")
    for r in rows:
        base = direct.get((r.mode, r.clients))
        if r.target == "direct" or base is None:
            continue
        added.add_row(
            r.target, r.mode, str(r.clients), f"{r.p50 - base.p50:+.2f}",
            f"{r.p99 - base.p99:+.2f}", f"{r.rps / base.rps:.0%}",
        )  # fmt: skip
    console.print(added)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,8,32,64", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each step")
    parser.add_argument("--stream-clients", default="8", help="client counts for streams")
    parser.add_argument("--gaps", default="", help="more unloaded rows: ms between requests")
    parser.add_argument("--route-clients", default="", help="client counts for POST /v1/route "
                        "(wrk and, at one client, httpx)")  # fmt: skip
    parser.add_argument("--model", default="coe-auto", help="model asked of the gateway")
    parser.add_argument("--redis-url", help="Redis on, and a key with limits on every request")
    parser.add_argument("--workers", default="1", help="worker counts of this gateway: 1,2")
    parser.add_argument("--loops", default="", help="this gateway on each event loop "
                        "(COE_LOOP): uvloop,asyncio; default: its own default")  # fmt: skip
    parser.add_argument("--baseline", type=Path, help="another checkout to measure alongside")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct rows")
    parser.add_argument("--python-load", action="store_true", help="never use wrk")
    parser.add_argument("--fake", choices=("auto", "native", "python"), default="auto",
                        help="the fake expert: nginx (native), FakeExpert under uvicorn "
                        "(python); auto: native when nginx is installed")  # fmt: skip
    parser.add_argument("--serve-fake", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fake:
        _serve_fake(args.serve_fake)
        return
    levels = [int(c) for c in args.clients.split(",") if c]
    stream_levels = [int(c) for c in args.stream_clients.split(",") if c]
    console = Console(width=200)
    here = Path(__file__).resolve().parents[1]
    counts = [int(w) for w in args.workers.split(",")]
    loops = [loop for loop in args.loops.split(",") if loop] or [""]
    codes: dict[str, tuple[Path, int, dict[str, str]]] = {}
    for w in counts:
        for loop in loops:
            parts = ["coe", f"x{w}" if len(counts) > 1 else "", loop if len(loops) > 1 else ""]
            name = " ".join(part for part in parts if part)
            codes[name] = (here, w, {"COE_LOOP": loop} if loop else {})
    if args.baseline:
        codes["baseline"] = (args.baseline.resolve(), 1, {})
    prefix = f"coe-bench-{uuid.uuid4().hex[:8]}:"
    fake_port = _free_port()
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coe-bench-")))
        pool = tmp / "pool.yaml"
        expert = {"name": EXPERT, "engine": "openai", "base_url": f"http://127.0.0.1:{fake_port}/v1",
                  "max_concurrency": 256, "input_price": 1.0, "output_price": 2.0}  # fmt: skip
        pool.write_text(yaml.safe_dump({"experts": [expert], "router": {"name": "cheapest"}}))
        env = {**os.environ, "COE_WORK_DIR": str(tmp / "coe"), "COE_LOG_LEVEL": "warning"}
        key = None
        if args.redis_url:
            env |= {"COE_REDIS_URL": args.redis_url, "COE_REDIS_PREFIX": prefix}
            key = _add_key(args.redis_url, prefix)
            stack.callback(_drop_prefix, args.redis_url, prefix)
        fake = _fake_kind(args.fake)
        fake_argv = _pinned(_fake_argv(fake, fake_port, tmp), GENERATOR_CPU)
        fake_url = f"http://127.0.0.1:{fake_port}"
        targets = {"direct": (f"{fake_url}/v1", EXPERT, stack.enter_context(
            _process(fake_argv, f"{fake_url}/v1/models", tmp / "fake.log", env)))}  # fmt: skip
        for name, (code, workers, code_env) in codes.items():
            port = _free_port()
            argv = _gateway_argv(pool, port, workers)
            cpus = GATEWAY_CPU if max(counts) == 1 else None
            code_env = env | code_env | {"PYTHONPATH": str(code)}
            pid = stack.enter_context(
                _process(_pinned(argv, cpus), f"http://127.0.0.1:{port}/ready",
                         tmp / f"{name.replace(' ', '-')}.log", code_env, code)
            )  # fmt: skip
            targets[name] = (f"http://127.0.0.1:{port}/v1", args.model, pid)
        if args.no_direct:
            targets.pop("direct")
        steps = [(f"idle {int(g)}ms", 1) for g in args.gaps.split(",") if g and int(g) != 100]
        steps += [("unloaded", 1)] + [("json", c) for c in levels]
        steps += [("stream", c) for c in stream_levels]
        route_levels = [int(c) for c in args.route_clients.split(",") if c]
        steps += [("route", c) for c in route_levels]
        steps += [("route httpx", 1)] if 1 in route_levels else []
        console.print(
            f"{args.seconds:.0f} s per step, clients {levels}, {os.cpu_count()} CPUs, "
            f"{'wrk' if shutil.which('wrk') and not args.python_load else 'python'} load, "
            f"redis {'on + key with limits' if key else 'off'}, workers {counts}, "
            f"loops {[loop or 'default' for loop in loops]}, "
            f"{fake} fake expert; "
            f"gateway model {args.model!r} -> expert {EXPERT!r}"
        )
        rows = []
        for mode, clients in steps:
            for target, (url, model, pid) in targets.items():
                if target == "direct" and mode.startswith("route"):
                    continue  # an expert does not route
                rows.append(_measure(target, url, model, pid, mode, clients, args,
                                     key if target != "direct" else None, tmp))  # fmt: skip
        load = Path("/proc/loadavg").read_text().split()[:3]
    _report(rows, console, f"load average {' '.join(load)}")


if __name__ == "__main__":
    main()
