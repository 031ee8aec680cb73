"""The routing step of `coe-auto`: its latency, its throughput and its quality, per embedder.

For each embedder (`minilm` on torch, `minilm-onnx` and `minilm-onnx-int8` on ONNX Runtime):

1. quality: the default `ensemble` router trained on LLMRouter's train split with that embedder,
   evaluated on the test split (AIQ, as `coe eval` computes it; 119 overlapping questions removed
   by `coe data import`); embeddings are cached in `--embed-cache` under each variant's own id;
2. the floor: the embedder alone, one text per call, one thread, on 200 distinct test questions;
3. the decision: a real `coe serve --pool config/nvidia.yaml` with that router (pinned to CPU 1
   when `taskset` exists), `POST /v1/route` (no expert is called) with the same 200 questions one
   at a time from this process; the same question repeated (the LRU cache's hit); and 16 clients
   at once on 400 other distinct questions (decisions per second).

    .venv/bin/python benchmarks/routing_latency.py --embed-cache /work/cache/embeddings

Quote `uptime` beside the table (printed at the end): the machine's other work moves the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
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
    aiq: float
    embed_ms: tuple[float, float, float]  # p50, p90, p99 of the embedder alone
    route_ms: tuple[float, float, float]  # p50, p90, p99 of POST /v1/route
    hit_ms: float  # p50 of a repeated question
    per_s: float  # decisions per second with 16 clients


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


def _floor(variant: str, questions: list[str], models: Path) -> tuple[float, float, float]:
    """The embedder alone: one text per call, one thread, no cache."""
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
    for text in questions:
        start = time.perf_counter()
        embedder.embed_batch([text])
        times.append(time.perf_counter() - start)
    return _percentiles(times)


@contextlib.contextmanager
def _gateway(artifact: Path, variant: str, work: Path) -> Iterator[str]:
    port = 18000 + os.getpid() % 1000
    argv = [sys.executable, "-c", "from api.cli import main; main()", "serve", "--pool",
            str(HERE / "config" / "nvidia.yaml"), "--router-artifact", str(artifact),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        argv = ["taskset", "-c", "1", *argv]
    env = os.environ | {"COE_EMBEDDER": variant, "COE_WORK_DIR": str(work), "NVIDIA_API_KEY":
                        "unused-route-only", "COE_LOG_LEVEL": "warning"}  # fmt: skip
    log = work / f"gateway-{variant}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
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
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _body(question: str) -> dict[str, object]:
    return {"model": "coe-auto", "messages": [{"role": "user", "content": question}]}


async def _decisions(url: str, one_by_one: list[str], concurrent: list[str]) -> tuple[
    tuple[float, float, float], float, float]:  # fmt: skip
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        (await client.post("/v1/route", json=_body("warm up"))).raise_for_status()
        times = []
        for question in one_by_one:
            start = time.perf_counter()
            (await client.post("/v1/route", json=_body(question))).raise_for_status()
            times.append(time.perf_counter() - start)
        hits = []
        for _ in range(50):
            start = time.perf_counter()
            (await client.post("/v1/route", json=_body(one_by_one[0]))).raise_for_status()
            hits.append(time.perf_counter() - start)
    queue = list(concurrent)

    async def worker() -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            while queue:
                (await client.post("/v1/route", json=_body(queue.pop()))).raise_for_status()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(16)))
    rate = len(concurrent) / (time.perf_counter() - start)
    return _percentiles(times), _percentiles(hits)[0], rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=HERE.parent / "shared/data/llmrouter")
    parser.add_argument("--data", type=Path, default=Path("data/llmrouter"))
    parser.add_argument("--embed-cache", type=Path, default=Path(".cache/coe/embeddings"))
    parser.add_argument("--models", type=Path, default=Path(".coe/models"),
                        help="where the ONNX exports are built once")  # fmt: skip
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--also", type=Path, action="append", default=[],
                        help="another canonical folder (train/test.parquet): AIQ only")  # fmt: skip
    args = parser.parse_args()
    train_file, test_file = _dataset(args.source, args.data)
    from training.dataset import read_dataset, to_routing_data

    test = to_routing_data(read_dataset(test_file), test_file)
    prompts = list(dict.fromkeys(test.prompts))
    one_by_one, concurrent = prompts[:200], prompts[200:600]
    rows = []
    with tempfile.TemporaryDirectory(prefix="coe-routing-") as tmp:
        work = Path(tmp)
        for variant in args.variants.split(","):
            artifact = work / f"{variant}.pkl"
            aiq = _quality(variant, train_file, test_file, args.embed_cache, args.models,
                           artifact)  # fmt: skip
            floor = _floor(variant, one_by_one, args.models)
            with _gateway(artifact, variant, work) as url:
                route, hit, rate = asyncio.run(_decisions(url, one_by_one, concurrent))
            rows.append(Row(variant, aiq, floor, route, hit, rate))
    table = Table(title="coe-auto's routing step on LLMRouter test questions (ms)")
    for name in ("embedder", "AIQ", "embed p50/p90/p99", "route p50/p90/p99", "hit p50",
                 "decisions/s @16"):  # fmt: skip
        table.add_column(name, justify="left" if name == "embedder" else "right")
    for r in rows:
        table.add_row(
            r.variant, f"{r.aiq:.4f}", "/".join(f"{v:.1f}" for v in r.embed_ms),
            "/".join(f"{v:.1f}" for v in r.route_ms), f"{r.hit_ms:.2f}", f"{r.per_s:.1f}",
        )  # fmt: skip
    Console(width=200).print(table)
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
