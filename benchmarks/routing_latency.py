"""The routing step of `coe-auto`: its latency, its throughput and its quality, per embedder.

For each embedder (`minilm` on torch, `minilm-onnx` and `minilm-onnx-int8` on ONNX Runtime):

1. quality: the default `ensemble` router trained on LLMRouter's train split with that embedder,
   evaluated on the test split (AIQ, as `coe eval` computes it; 119 overlapping questions removed
   by `coe data import`); embeddings are cached in `--embed-cache` under each variant's own id;
2. the floor: the embedder alone, one text per call, one thread, on 200 distinct test questions;
3. the decision: a real `coe serve --pool config/nvidia.yaml` with that router (pinned to CPU 1
   when `taskset` exists), `POST /v1/route` (no expert is called) with the same 200 questions one
   at a time from this process; the same question repeated (the LRU cache's hit); and 16 clients
   at once on 400 other distinct questions (decisions per second);
4. what load does not move: the gateway's CPU time per decision (from /proc, one at a time),
   beside the embedder's CPU time per text, so `coe over embed` is coe's own CPU per decision
   (on a loaded machine the embedding's own CPU varies more than that difference: then read
   `loop CPU`, the event loop thread's CPU per cold decision and per hit, which is everything
   the gateway does except the embedding call, run in a worker thread);
   and, in a process of its own, a cache hit's CPU time and Python function calls for the
   whole `POST /v1/route` (in-process ASGI, client included) and for `RoutingService.decide`.

    .venv/bin/python benchmarks/routing_latency.py --embed-cache /work/cache/embeddings

`--baseline DIR` measures another checkout (its gateway, its routing code and its own default
router, trained on the same embeddings: an artifact holds that checkout's classes) in the same
run, row beside row; `--questions`, `--concurrent` and `--hits` bound a run
on a busy machine. Quote `uptime` beside the table (printed at the end): the machine's other
work moves the wall-clock numbers, not the CPU times or the call counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parents[1]
VARIANTS = ("minilm", "minilm-onnx", "minilm-onnx-int8")


@dataclass(frozen=True)
class Row:
    variant: str
    tree: str  # "this" or the baseline checkout
    aiq: float
    embed_ms: tuple[float, float, float]  # p50, p90, p99 of the embedder alone
    embed_cpu_ms: float  # the embedder's CPU time per text
    route_ms: tuple[float, float, float]  # p50, p90, p99 of POST /v1/route
    route_cpu_ms: float  # the gateway's CPU time per decision, one at a time
    loop_cpu_ms: float  # of which its event loop's thread (all but the embedding call itself)
    hit_loop_cpu_ms: float  # the event loop's CPU time per cache hit over HTTP
    hit_ms: float  # p50 of a repeated question (this process's httpx client)
    hit_wrk_ms: tuple[float, float] | None  # p50, p99 of the same from wrk -c1 (when installed)
    per_s: float  # decisions per second with 16 clients
    probe: dict[str, float]  # a cache hit in process: CPU ms and calls, route and decide


@dataclass(frozen=True)
class Sizes:
    questions: int  # one at a time
    concurrent: int  # with 16 clients
    hits: int  # the same question repeated
    wrk_seconds: int = 5  # the same question from wrk (0: not measured)


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = np.percentile(np.array(values) * 1000, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def _coe(*args: str, env: dict[str, str] | None = None) -> None:
    argv = [sys.executable, "-c", "from api.cli import main; main()", *args]
    subprocess.run(argv, check=True, env=env, stdout=subprocess.DEVNULL)


def _dataset(source: Path, folder: Path) -> tuple[Path, Path]:
    train, test = folder / "train.parquet", folder / "test.parquet"
    if not train.exists():
        _coe("data", "import", str(source), "--format", "llmrouter", "--out", str(folder))
    return train, test


def _quality(variant: str, train_file: Path, test_file: Path, cache: Path, models: Path,
             out: Path) -> float:  # fmt: skip
    """Train `ensemble` with this embedder, save it to `out`, return its AIQ on test."""
    from router.embedder import load_embedder
    from training.dataset import read_dataset, to_routing_data
    from training.embed import embed_prompts
    from training.evaluate import evaluate_router
    from training.fitting import fit_router

    embedder = load_embedder(cache, variant, models)
    train = to_routing_data(read_dataset(train_file), train_file)
    test = to_routing_data(read_dataset(test_file), test_file, models=train.models)
    x_train = embed_prompts(train.prompts, embedder, description=f"{variant}: train")
    x_test = embed_prompts(test.prompts, embedder, description=f"{variant}: test")
    router = fit_router("ensemble", train, x_train, {}, 0)
    router.save(out)
    cost_scale = float(train.costs.max(axis=1).mean())
    result = evaluate_router(router, x_test, test, cost_scale)
    return float(result.metrics["aiq"])


def _floor(variant: str, questions: list[str], models: Path) -> tuple[tuple[float, float, float],
                                                                       float]:  # fmt: skip
    """The embedder alone: one text per call, one thread, no cache; (percentiles, CPU ms/text)."""
    from router.embedder import SentenceTransformerEmbedder, load_embedder
    from router.onnx_embedder import OnnxEmbedder

    embedder = load_embedder(None, variant, models)
    if isinstance(embedder, SentenceTransformerEmbedder):
        import torch

        torch.set_num_threads(1)
    elif isinstance(embedder, OnnxEmbedder):
        embedder.threads = 1
    embedder.embed_batch(["warm up"])
    times = []
    cpu = time.process_time()
    for text in questions:
        start = time.perf_counter()
        embedder.embed_batch([text])
        times.append(time.perf_counter() - start)
    return _percentiles(times), (time.process_time() - cpu) / len(questions) * 1000


def _cpu_s(pid: int, thread: bool = False) -> float:
    """User + system CPU seconds of process `pid` so far, or with `thread` of its main thread
    alone (the event loop's; the embedding runs in worker threads); NaN where /proc is missing."""
    stat = Path(f"/proc/{pid}/task/{pid}/stat" if thread else f"/proc/{pid}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _probe(artifact: Path, variant: str, n: int) -> dict[str, float]:
    """A cache hit in this process: CPU ms and Python function calls per `POST /v1/route`
    (through `httpx.ASGITransport`, the client's side included) and per `RoutingService.decide`."""
    import cProfile
    import pstats

    os.environ.setdefault("NVIDIA_API_KEY", "unused-route-only")
    from api.app import create_app
    from api.settings import Settings

    async def run(work: Path) -> dict[str, float]:
        app = create_app(Settings(pool=HERE / "config" / "nvidia.yaml", router_artifact=artifact,
                                  embedder=variant, work_dir=work, _env_file=None))  # fmt: skip
        body = _body("What is the capital of France, and why did it become the capital?")
        out: dict[str, float] = {}
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://coe"
            ) as client,
        ):
            routing = app.state.routing
            steps = {"route": lambda: client.post("/v1/route", json=body),
                     "decide": lambda: routing.decide(body["messages"])}  # fmt: skip
            for name, step in steps.items():
                for _ in range(max(20, n // 10)):
                    await step()
                cpu = time.process_time()
                for _ in range(n):
                    await step()
                out[f"{name}_cpu_ms"] = (time.process_time() - cpu) / n * 1000
                profile = cProfile.Profile()
                profile.enable()
                await step()
                profile.disable()
                out[f"{name}_calls"] = float(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]
        return out

    with tempfile.TemporaryDirectory(prefix="coe-probe-") as tmp:
        return asyncio.run(run(Path(tmp)))


def _probe_in(tree: Path, artifact: Path, variant: str, n: int) -> dict[str, float]:
    """`_probe` in a fresh process that imports `tree`'s code."""
    env = os.environ | {"PYTHONPATH": str(tree)}
    argv = [sys.executable, __file__, "--probe", str(artifact), "--variants", variant,
            "--hits", str(n)]  # fmt: skip
    done = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    return {k: float(v) for k, v in (kv.split("=") for kv in done.stdout.split()[-4:])}


def _quality_in(tree: Path, variant: str, train_file: Path, test_file: Path,
                args: argparse.Namespace, out: Path) -> float:  # fmt: skip
    """`_quality` with `tree`'s routing code (its own default router, as its gateway would be
    trained): an artifact of this checkout may hold classes an older one lacks."""
    if tree == HERE:
        return _quality(variant, train_file, test_file, args.embed_cache, args.models, out)
    env = os.environ | {"PYTHONPATH": str(tree)}
    argv = [sys.executable, __file__, "--train-only", str(out), "--variants", variant,
            "--data", str(train_file.parent), "--embed-cache", str(args.embed_cache.resolve()),
            "--models", str(args.models.resolve())]  # fmt: skip
    done = subprocess.run(argv, env=env, check=True, capture_output=True, text=True)
    return float(done.stdout.split()[-1].split("=")[1])


@contextlib.contextmanager
def _gateway(artifact: Path, variant: str, work: Path, tree: Path) -> Iterator[tuple[str, int]]:
    port = 18000 + os.getpid() % 1000
    argv = [sys.executable, "-c", "from api.cli import main; main()", "serve", "--pool",
            str(HERE / "config" / "nvidia.yaml"), "--router-artifact", str(artifact),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        argv = ["taskset", "-c", "1", *argv]
    env = os.environ | {"COE_EMBEDDER": variant, "COE_WORK_DIR": str(work), "NVIDIA_API_KEY":
                        "unused-route-only", "COE_LOG_LEVEL": "warning",
                        "PYTHONPATH": str(tree)}  # fmt: skip
    log = work / f"gateway-{variant}-{os.getpid()}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        # cwd=tree: `python -c` puts the working directory first on sys.path, before
        # PYTHONPATH, so from this checkout's root a baseline would run this checkout's code
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tree)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"gateway exited:\n{log.read_text()}")
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway not up after 300 s:\n{log.read_text()}")
                time.sleep(0.5)
            yield url, proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _body(question: str) -> dict[str, object]:
    return {"model": "coe-auto", "messages": [{"role": "user", "content": question}]}


_WRK_HIT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{body}]]
done = function(summary, latency, requests)
  io.write(string.format("COE %d %f %f\\n", summary.requests,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def _wrk_hits(url: str, question: str, seconds: int, work: Path) -> tuple[float, float] | None:
    """p50, p99 (ms) of the same question asked back to back by `wrk -c1`, a client in C (on
    CPU 0, the gateway's on CPU 1), beside this process's httpx figure; None without wrk."""
    if shutil.which("wrk") is None or seconds <= 0:
        return None
    body = json.dumps(_body(question))
    if "]]" in body:  # the end of a Lua long string
        raise ValueError("the question cannot hold ']]'")
    script = work / f"hit-{os.getpid()}.lua"
    script.write_text(_WRK_HIT.format(body=body))
    argv = ["wrk", "-t1", "-c1", f"-d{seconds}s", "-s", str(script), f"{url}/v1/route"]
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        argv = ["taskset", "-c", "0", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^COE (\d+) ([\d.]+) ([\d.]+)$", out, re.M)
    if match is None or int(match[1]) == 0:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    return float(match[2]), float(match[3])


async def _decisions(url: str, pid: int, one_by_one: list[str], concurrent: list[str], hits_n: int
                     ) -> tuple[tuple[float, float, float], tuple[float, float, float], float,
                                float]:  # fmt: skip
    """(route percentiles, gateway CPU ms per decision: whole, event loop, event loop per hit;
    hit p50, decisions/s at 16 clients)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        (await client.post("/v1/route", json=_body("warm up"))).raise_for_status()
        times = []
        cpu, loop = _cpu_s(pid), _cpu_s(pid, thread=True)
        for question in one_by_one:
            start = time.perf_counter()
            (await client.post("/v1/route", json=_body(question))).raise_for_status()
            times.append(time.perf_counter() - start)
        cpu_ms = (_cpu_s(pid) - cpu) / len(one_by_one) * 1000
        loop_ms = (_cpu_s(pid, thread=True) - loop) / len(one_by_one) * 1000
        hits, loop = [], _cpu_s(pid, thread=True)
        for _ in range(hits_n):
            start = time.perf_counter()
            (await client.post("/v1/route", json=_body(one_by_one[0]))).raise_for_status()
            hits.append(time.perf_counter() - start)
        hit_loop_ms = (_cpu_s(pid, thread=True) - loop) / hits_n * 1000
    queue = list(concurrent)

    async def worker() -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            while queue:
                (await client.post("/v1/route", json=_body(queue.pop()))).raise_for_status()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(16)))
    rate = len(concurrent) / (time.perf_counter() - start)
    return _percentiles(times), (cpu_ms, loop_ms, hit_loop_ms), _percentiles(hits)[0], rate


Floor = tuple[tuple[float, float, float], float]


def _measure(variant: str, tree: Path, aiq: float, artifact: Path, work: Path,
             questions: tuple[list[str], list[str]], floor: Floor, sizes: Sizes
             ) -> Row:  # fmt: skip
    """One row: `tree`'s gateway and probe with `artifact`, beside the embedder's floor."""
    with _gateway(artifact, variant, work, tree) as (url, pid):
        route, cpu_ms, hit, rate = asyncio.run(_decisions(url, pid, *questions, sizes.hits))
        hit_wrk = _wrk_hits(url, questions[0][0], sizes.wrk_seconds, work)
    probe = _probe_in(tree, artifact, variant, 10 * sizes.hits)
    label = "this" if tree == HERE else str(tree)
    return Row(variant, label, aiq, floor[0], floor[1], route, *cpu_ms, hit, hit_wrk, rate, probe)


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=HERE.parent / "shared/data/llmrouter")
    parser.add_argument("--data", type=Path, default=Path("data/llmrouter"))
    parser.add_argument("--embed-cache", type=Path, default=Path(".cache/coe/embeddings"))
    parser.add_argument("--models", type=Path, default=Path(".coe/models"),
                        help="where the ONNX exports are built once")  # fmt: skip
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="another canonical folder (train/test.parquet): AIQ only")  # fmt: skip
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout to measure beside this one")  # fmt: skip
    parser.add_argument("--questions", type=int, default=200, help="asked one at a time")
    parser.add_argument("--concurrent", type=int, default=400, help="asked by 16 clients")
    parser.add_argument("--hits", type=int, default=50, help="the same question repeated")
    parser.add_argument("--wrk-seconds", type=int, default=5,
                        help="the same question from wrk -c1 for this long (0: not)")  # fmt: skip
    parser.add_argument("--probe", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--train-only", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def _table(rows: list[Row]) -> Table:
    table = Table(title="coe-auto's routing step on LLMRouter test questions (ms)")
    for name in ("embedder", "tree", "AIQ", "embed p50/p90/p99", "route p50/p90/p99",
                 "hit p50 httpx", "hit p50/p99 wrk",
                 "decisions/s @16", "CPU embed", "CPU decision", "coe over embed",
                 "loop CPU cold/hit", "hit CPU route/decide",
                 "hit calls route/decide"):  # fmt: skip
        table.add_column(name, justify="left" if name in ("embedder", "tree") else "right")
    for r in rows:
        p = r.probe
        table.add_row(
            r.variant, r.tree, f"{r.aiq:.4f}", "/".join(f"{v:.1f}" for v in r.embed_ms),
            "/".join(f"{v:.1f}" for v in r.route_ms), f"{r.hit_ms:.2f}",
            "-" if r.hit_wrk_ms is None else "/".join(f"{v:.2f}" for v in r.hit_wrk_ms),
            f"{r.per_s:.1f}",
            f"{r.embed_cpu_ms:.2f}", f"{r.route_cpu_ms:.2f}",
            f"{r.route_cpu_ms - r.embed_cpu_ms:.2f}",
            f"{r.loop_cpu_ms:.2f}/{r.hit_loop_cpu_ms:.2f}",
            f"{p['route_cpu_ms']:.3f}/{p['decide_cpu_ms']:.3f}",
            f"{p['route_calls']:.0f}/{p['decide_calls']:.0f}",
        )  # fmt: skip
    return table


def main() -> None:
    args = _args()
    if args.train_only is not None:  # the child process of `_quality_in`
        train_file, test_file = args.data / "train.parquet", args.data / "test.parquet"
        aiq = _quality(args.variants, train_file, test_file, args.embed_cache, args.models,
                       args.train_only)  # fmt: skip
        print(f"aiq={aiq}")
        return
    if args.probe is not None:  # the child process of `_probe_in`
        probe = _probe(args.probe, args.variants, args.hits)
        print(" ".join(f"{k}={v}" for k, v in probe.items()))
        return
    train_file, test_file = _dataset(args.source, args.data)
    from training.dataset import read_dataset, to_routing_data

    test = to_routing_data(read_dataset(test_file), test_file)
    prompts = list(dict.fromkeys(test.prompts))
    sizes = Sizes(args.questions, args.concurrent, args.hits, args.wrk_seconds)
    questions = prompts[: sizes.questions], prompts[sizes.questions :][: sizes.concurrent]
    trees = [HERE] + ([args.baseline.resolve()] if args.baseline is not None else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="coe-routing-") as tmp:
        work = Path(tmp)
        for variant in args.variants.split(","):
            floor = _floor(variant, questions[0], args.models)
            for i, tree in enumerate(trees):
                artifact = work / f"{variant}-{i}.pkl"
                aiq = _quality_in(tree, variant, train_file, test_file, args, artifact)
                rows.append(_measure(variant, tree, aiq, artifact, work, questions, floor, sizes))
    Console(width=240).print(_table(rows))
    for folder in args.also:
        with tempfile.TemporaryDirectory(prefix="coe-routing-") as tmp:
            aiqs = {
                variant: _quality(variant, folder / "train.parquet", folder / "test.parquet",
                                  args.embed_cache, args.models, Path(tmp) / "r.pkl")
                for variant in args.variants.split(",")
            }  # fmt: skip
        print(f"AIQ on {folder}: " + ", ".join(f"{v} {a:.4f}" for v, a in aiqs.items()))
    print("load average", " ".join(Path("/proc/loadavg").read_text().split()[:3]))


if __name__ == "__main__":
    main()
