"""`coe serve --workers N`: N gateway processes behind one port, sharing their state on Redis.

One Python process serves one core's worth of requests. With `--workers N` uvicorn forks N
worker processes that accept on the same socket. What they must agree on (keys, rate limits,
budgets, the request log, the response cache, feedback) lives in Redis, so more than one worker
without `COE_REDIS_URL` is refused. Local experts (llama.cpp, a launched vLLM) are started once,
here in the parent, and supervised here; each worker reaches them as ordinary endpoints through a
derived pool file (`<work_dir>/workers-pool.yaml`), so N workers never start N copies of a model.

Residency (`max_resident`) switches experts in and out of memory from one process's queues, so
a pool that sets it is served by one worker only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from fastapi import FastAPI

from api.settings import Settings
from experts.pool import PoolConfig, load_pool

__all__ = ["WorkersRefused", "check_workers", "serve_workers", "worker_app"]


class WorkersRefused(ValueError):
    """`--workers N` asked for a setup whose state the workers could not share."""


def check_workers(settings: Settings, workers: int, config: PoolConfig) -> None:
    """Raise `WorkersRefused`, saying what to do, when `workers` processes cannot share state."""
    if workers <= 1:
        return
    if not settings.redis_url:
        raise WorkersRefused(
            f"--workers {workers} needs Redis: keys, rate limits, budgets, the request log and "
            "the cache must be shared by every worker. Set COE_REDIS_URL=redis://host:6379/0, "
            "or serve with one worker."
        )
    if config.max_resident is not None:
        raise WorkersRefused(
            f"--workers {workers} cannot share residency (max_resident: {config.max_resident} "
            "in the pool file): one process decides which local experts are in memory. Drop "
            "max_resident or serve with one worker."
        )


def _attached_pool(config: PoolConfig, urls: dict[str, str]) -> dict[str, Any]:
    """The pool file the workers load: experts the parent runs become plain endpoints."""
    data = config.model_dump(mode="json", exclude_none=True)
    served = {e.name: e.served_model for e in config.experts}
    for expert in data["experts"]:
        url = urls.get(expert["name"])
        if url is None:
            continue
        for field in ("gguf", "gguf_package", "model_path", "chat_format", "n_ctx", "n_threads",
                      "extra_args"):  # fmt: skip
            expert.pop(field, None)
        expert["engine"] = "openai"
        expert["base_url"] = url
        expert["model"] = served[expert["name"]]
    return data


@contextlib.contextmanager
def _local_experts(settings: Settings, config: PoolConfig) -> Iterator[dict[str, str]]:
    """Start the pool's local experts in a thread of this process (supervised, restarted on a
    crash on the same port) and yield each one's `/v1` URL; stop them when the block ends."""
    from experts.live import LivePool

    pool = LivePool(config, settings.work_dir)
    local = [n for n, e in pool.engines.items() if e.restartable]
    if not local:
        yield {}
        return
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:  # the experts die with this thread (PDEATHSIG): it lives until the end
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(pool.start())
        except BaseException as exc:  # reported to the caller below
            failure.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.run_until_complete(pool.stop())

    thread = threading.Thread(target=run, name="coe-local-experts", daemon=True)
    thread.start()
    started.wait()
    if failure:
        raise failure[0]
    try:
        yield {name: pool.engines[name].base_url for name in local}
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)


def serve_workers(settings: Settings, workers: int) -> None:
    """Run the gateway in `workers` processes on `settings.host:port` until interrupted."""
    import uvicorn

    config = load_pool(settings.pool)
    check_workers(settings, workers, config)
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    with _local_experts(settings, config) as urls:
        pool_file = settings.work_dir / "workers-pool.yaml"
        pool_file.write_text(yaml.safe_dump(_attached_pool(config, urls), sort_keys=False))
        # Workers read their settings from the environment, as `coe serve` would.
        os.environ["COE_POOL"] = str(pool_file.resolve())
        os.environ["COE_WORK_DIR"] = str(Path(settings.work_dir).resolve())
        if settings.router_artifact is not None:
            os.environ["COE_ROUTER_ARTIFACT"] = str(settings.router_artifact.resolve())
        uvicorn.run(
            "api.workers:worker_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=workers,
            log_level=settings.log_level,
            access_log=settings.access_log,
            loop=settings.loop,
            timeout_graceful_shutdown=10,
        )


def worker_app() -> FastAPI:
    """One worker's app (uvicorn's factory): settings from the environment `serve_workers` set."""
    from api.app import create_app

    return create_app(Settings())
