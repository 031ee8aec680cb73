"""The store the settings ask for: in-process, or Redis with memory standing in when it is away."""

from __future__ import annotations

from api.settings import Settings
from api.store.base import Store
from api.store.fallback import FallbackStore
from api.store.log_flusher import LogFlusher
from api.store.memory import MemoryStore

__all__ = ["open_redis", "open_store"]


def open_redis(settings: Settings) -> Store:
    """The bare Redis store of `COE_REDIS_URL` (for the CLI, which must not fall back)."""
    if not settings.redis_url:
        raise ValueError("COE_REDIS_URL is not set")
    from api.store.redis import RedisStore  # redis-py only when Redis is configured

    return RedisStore.from_url(
        settings.redis_url,
        settings.redis_prefix,
        settings.redis_timeout_s,
        settings.request_log_max,
        settings.request_log_retention_s,
        connect_timeout_s=settings.redis_connect_timeout_s,
        max_connections=settings.redis_max_connections,
        pool_timeout_s=settings.redis_pool_timeout_s,
    )


async def open_store(settings: Settings) -> Store:
    """Started and ready to serve; never raises because Redis is unreachable. On Redis, the
    request log is written in batches off the request path (`LogFlusher`)."""
    local = MemoryStore(settings.request_log_max, settings.cache_max_entries)
    if not settings.redis_url:
        return local
    store = FallbackStore(
        open_redis(settings),
        local,
        settings.redis_retry_s,
        key_mirror=settings.work_dir / "keys-mirror.json",
        shutdown_timeout_s=settings.shutdown_timeout_s,
    )
    await store.start()
    return LogFlusher(store, shutdown_timeout_s=settings.shutdown_timeout_s)
