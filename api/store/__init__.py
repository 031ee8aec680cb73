"""Gateway state: request log, feedback, keys, limit counters, response cache.

In-process by default; on Redis with `COE_REDIS_URL` (memory standing in while it is away).
"""

from api.store.base import (
    Adjustment,
    ApiKey,
    Charge,
    FeedbackRecord,
    RequestRecord,
    Store,
    StoreUnavailable,
)
from api.store.memory import MemoryStore

__all__ = [
    "Adjustment",
    "ApiKey",
    "Charge",
    "FeedbackRecord",
    "MemoryStore",
    "RequestRecord",
    "Store",
    "StoreUnavailable",
]
