"""Gateway state: the request log and feedback (in-process now; Redis with `COE_REDIS_URL`)."""

from api.store.base import FeedbackRecord, RequestRecord, Store
from api.store.memory import MemoryStore

__all__ = ["FeedbackRecord", "MemoryStore", "RequestRecord", "Store"]
