"""The FastAPI application. Everything shared is created in the lifespan, never at import.

app = create_app(Settings(pool=Path("config/local.yaml")))
# uvicorn.run(app): the lifespan starts the pool's experts, loads the router, and on
# shutdown (SIGTERM, Ctrl-C) stops every process it started.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from fastapi import Depends, FastAPI
from fastapi.telemetry import TelemetryConfig
from threadpoolctl import threadpool_limits

from api.cache import ResponseCache
from api.cascade import Cascade
from api.compose import ComposeService
from api.dashboard import StoreBudgets
from api.embedding import BatchingEmbedder
from api.errors import ERROR_RESPONSES, install_error_handlers
from api.fastlane import FastLane
from api.keys import KeyAuth, require_admin
from api.learning import OnlineLearner
from api.limits import Limiter, period_window
from api.metrics import Metrics, pool_gauges
from api.middleware import BodySizeLimit
from api.pipeline import ChatPipeline, Executors
from api.plan import Planner
from api.routes import chat, dashboard, feedback, health, models, passthrough
from api.routes import metrics as metrics_route
from api.routing import RoutingService, build_routers
from api.serving import SingleExpert
from api.settings import Settings
from api.settle import RequestLog
from api.sticky import Stickiness
from api.store import Store
from api.store.factory import open_store
from api.tracing import TraceRequests, configure, wanted
from experts import tracing
from experts.client import Timeouts
from experts.live import LivePool
from experts.pool import VIRTUAL_MODELS, PoolConfig, load_pool
from experts.shutdown import bounded
from router.base import Router
from router.embedder import check_recorded, resolve_embedder
from router.episodes import runs_episodes
from router.policy import Policy

if TYPE_CHECKING:
    from api.store.residency import RedisResidencyLease

__all__ = ["create_app"]

log = logging.getLogger("coe.api")


def _embedder_name(settings: Settings, artifact: Router | None, path: Path | None) -> str:
    """`COE_EMBEDDER` resolved against the embedder the artifact was trained with: unset, the
    artifact's; another than the artifact's, refused (`EmbedderMismatchError`, at start)."""
    recorded = artifact.embedder_ if artifact is not None else None
    name = resolve_embedder(settings.embedder, recorded, f"the router artifact {path}")
    if artifact is not None and artifact.uses_embeddings and recorded is None:
        log.warning(
            "the router artifact %s does not record the embedder it was trained with (written "
            "before coe recorded it, or fitted outside `coe train`): queries are embedded with "
            "%r (COE_EMBEDDER, default minilm), which must be the one it was trained with; "
            "retrain it with `coe train` to have it recorded",
            path,
            name,
        )
    return name


def _load_artifact(settings: Settings, config: PoolConfig) -> tuple[Router | None, str]:
    """The trained router, if one is configured, and the embedder its queries are embedded
    with. Read before any expert starts: an artifact or a `COE_EMBEDDER` that cannot be served
    fails in a second, not after the pool's processes have come up."""
    path = settings.router_artifact or config.router.artifact
    artifact = Router.load(path) if path else None
    return artifact, _embedder_name(settings, artifact, path)


def _load_routing(
    settings: Settings, pool: LivePool, artifact: Router | None, embedder_name: str
) -> RoutingService:
    config: PoolConfig = pool.config
    routers = build_routers(pool.descriptors(), artifact)
    default = settings.router or (artifact.name if artifact else config.router.name)
    if default not in routers:
        raise ValueError(
            f"router {default!r} (setting COE_ROUTER or the pool's router.name) is not loaded; "
            f"available: {sorted(routers)}; a trained router needs COE_ROUTER_ARTIFACT"
        )
    # Scoring is one small matrix product per batch of queries (kNN over the training set, a
    # classifier): BLAS threads only add hand-offs to it, and on a busy machine their spinning
    # made a kNN score take 15-30 ms instead of 2 (measured; see the README's Performance).
    threadpool_limits(1, user_api="blas")
    embedder: BatchingEmbedder | None = None
    if any(r.uses_embeddings for r in routers.values()):
        from router.embedder import load_embedder  # torch is heavy: only when a router needs it

        loaded = load_embedder(None, embedder_name, settings.work_dir / "models")
        check_recorded(loaded, artifact.embedder_ if artifact is not None else None)
        embedder = BatchingEmbedder(loaded, shutdown_timeout_s=settings.shutdown_timeout_s)
    cost_weight = (
        settings.cost_weight if settings.cost_weight is not None else config.router.cost_weight
    )
    return RoutingService(
        pool.descriptors(),
        routers,
        default,
        Policy(cost_weight, load_tolerance=settings.load_tolerance),
        embedder,
        settings.expected_completion_tokens,
        load_board=pool.load_board,
        embedder_name=embedder_name,
    )


def _share_residency(settings: Settings, pool: LivePool) -> RedisResidencyLease | None:
    """Replicas on one Redis take turns driving sleep and wake of the experts they share
    (external servers such as vLLM; each replica's own llama.cpp processes are its own)."""
    evictable = [e for e in pool.engines.values() if e.evictable]
    if not settings.redis_url or pool.config.max_resident is None or not evictable:
        return None
    if any(e.restartable for e in evictable):
        return None
    from api.store.residency import RedisResidencyLease, replica_id

    lease = RedisResidencyLease.from_url(
        settings.redis_url, settings.redis_prefix, settings.redis_timeout_s
    )
    pool.residency.share(lease, replica_id(), settings.residency_lease_s)
    return lease


def _cache(settings: Settings, store: Store, routing: RoutingService) -> ResponseCache | None:
    if settings.cache == "off":
        return None
    embedder = routing.embedder
    if settings.cache == "semantic" and embedder is None:
        from router.embedder import load_embedder  # loads the model at the first lookup

        embedder = BatchingEmbedder(  # the routing step's resolved choice, as it would embed
            load_embedder(None, routing.embedder_name, settings.work_dir / "models"),
            shutdown_timeout_s=settings.shutdown_timeout_s,
        )
    return ResponseCache(store, settings, embedder)


def _state(
    app: FastAPI, settings: Settings, pool: LivePool, planner: Planner, executors: Executors
) -> None:
    """The chat pipeline (`api.pipeline`) and what its steps share, all on `app.state`."""
    store: Store = app.state.store
    metrics = Metrics(known_models=[*pool.names, *VIRTUAL_MODELS])
    pool_gauges(metrics, pool)
    degraded = getattr(store, "degraded", None)
    if degraded is not None:
        metrics.gauge(
            "coe_store_degraded", "1 while Redis is unreachable and memory stands in", (),
            lambda: {(): float(getattr(store, "degraded", False))},
        )  # fmt: skip
    app.state.metrics = metrics
    app.state.cache = _cache(settings, store, planner.routing)
    app.state.chat = ChatPipeline(
        planner,
        Limiter(store, planner),
        executors,
        RequestLog(store, settings),
        metrics,
        app.state.cache,
    )
    app.state.guard = app.state.chat  # the name its admission and limiter had before issue 17
    app.state.budgets = StoreBudgets(store, period_window)


async def _close(
    app: FastAPI,
    routing: RoutingService | None,
    store: Store | None,
    pool: LivePool,
    timeout_s: float,
) -> None:
    """Stop what the lifespan started, embedders first, the expert processes last; each step
    bounded by `timeout_s` (`COE_SHUTDOWN_TIMEOUT_S`): one that hangs or fails is logged and
    the next runs, so a shutdown always ends."""
    if routing is not None and routing.embedder is not None:
        await bounded(routing.embedder.aclose(), timeout_s, "closing the routing embedder")
    cache: ResponseCache | None = getattr(app.state, "cache", None)
    own = cache.embedder if cache is not None else None
    if own is not None and own is not getattr(routing, "embedder", None):
        await bounded(own.aclose(), timeout_s, "closing the cache's embedder")
    if store is not None:  # the request log's last flush has its own 30 s bound inside
        await bounded(store.aclose(), timeout_s, "closing the store")
    await pool.stop()  # bounds each of its steps itself: a stuck one never skips the engines'


@contextmanager
def _steady_heap(gen0_threshold: int = 20_000) -> Iterator[None]:
    """Keep the cyclic garbage collector off what startup built, while the block runs.

    A loaded gateway holds a large long-lived heap (the router, the embedder, FastAPI's models);
    every full collection walked all of it, and the young collections ran every 700 allocations:
    together about 13% of the CPU under load. `gc.freeze` moves everything alive now to the
    permanent generation, which collections skip, and a larger first threshold makes the young
    collections rarer (the request path allocates many short-lived, acyclic objects that
    reference counting frees anyway). Both are undone on shutdown, so a process that builds
    many apps (the tests) leaks nothing into the frozen set."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(max(gen0_threshold, thresholds[0]), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


#: FastAPI's native telemetry off: coe's own (`api.tracing`) traces when tracing is wanted.
_UNTRACED: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(
    settings: Settings | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The gateway app. `transport` replaces the network for tests (an `httpx.MockTransport`)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        config = load_pool(settings.pool)
        artifact, embedder_name = _load_artifact(settings, config)
        stop_tracing = configure(settings)
        timeouts = Timeouts(connect=settings.connect_timeout_s, read=settings.read_timeout_s)
        pool = LivePool(
            config,
            settings.work_dir,
            timeouts,
            settings.unhealthy_cooldown_s,
            transport,
            shutdown_timeout_s=settings.shutdown_timeout_s,
        )
        pool.scheduler.max_wait_s, pool.scheduler.mode = settings.max_wait_s, settings.scheduling
        pool.scheduler.max_queue = settings.max_queue
        pool.scheduler.queue_timeout_s = settings.queue_timeout_s
        lease = _share_residency(settings, pool)
        try:
            await pool.start()
        except BaseException:
            if lease is not None:
                await lease.aclose()
            raise
        routing: RoutingService | None = None
        store: Store | None = None
        try:
            routing = _load_routing(settings, pool, artifact, embedder_name)
            if routing.embedder is not None:  # load the model now, not on the first request
                await routing.embedder.embed_one("warm-up")
            app.state.settings = settings
            app.state.pool = pool
            app.state.routing = routing
            app.state.store = store = await open_store(settings)
            single = SingleExpert(pool, routing, settings)
            composer = ComposeService(pool, routing, settings)
            sticky = Stickiness(store, settings.stickiness, settings.sticky_ttl_s)
            app.state.learner = learner = OnlineLearner(
                routing.routers,
                settings.work_dir,
                settings.exploration_max,
                settings.feedback_learning_rate,
            )
            cascade = None
            if any(map(runs_episodes, routing.routers.values())):  # serve cascades
                cascade = Cascade(pool, routing, learner, settings.default_max_tokens)
            planner = Planner(pool, routing, settings, sticky, cascades=cascade is not None)
            _state(app, settings, pool, planner, Executors(single, composer, cascade))
            log.info("coe ready: experts %s, router %s", pool.names, routing.default)
            with _steady_heap():
                yield
        finally:
            await _close(app, routing, store, pool, settings.shutdown_timeout_s)
            if stop_tracing is not None:
                stop_tracing()
            if lease is not None:
                await bounded(lease.aclose(), settings.shutdown_timeout_s, "closing the lease")

    traced = wanted(settings) or tracing.enabled()
    app = FastAPI(
        title="coe",
        summary="Composition of Experts: one OpenAI-compatible endpoint over many LLMs",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry asks the global providers on every request whether they
        # are configured (three environment reads and three lookups); untraced, the answer
        # never changes, so it is not asked.
        telemetry=None if traced else _UNTRACED,
    )
    install_error_handlers(app)
    app.add_middleware(FastLane)  # innermost: the hot routes, past auth and the size limit
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(KeyAuth)  # runs before the body is read
    if traced:
        app.add_middleware(TraceRequests)  # added last: runs first, around everything
    for module in (chat, passthrough, models, health, feedback, metrics_route):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    # The data needs an admin key once keys exist; the page itself asks for the key.
    app.include_router(
        dashboard.router, dependencies=[Depends(require_admin)], responses=ERROR_RESPONSES
    )
    app.include_router(dashboard.page, responses=ERROR_RESPONSES)
    return app
