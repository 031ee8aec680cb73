"""`POST /v1/feedback`: a client's score for a served answer; learning routers update from it."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from api.errors import RequestNotFound
from api.learning import OnlineLearner
from api.schemas import FeedbackRequest
from api.store import FeedbackRecord, Store

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/feedback")
async def feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
    """Record `score` in [0, 1] for the answer `request_id` (the `id` of a chat completion)."""
    store: Store = request.app.state.store
    learner: OnlineLearner = request.app.state.learner
    record = await store.get_request(body.request_id)
    if record is None:
        raise RequestNotFound(
            f"no request {body.request_id!r} in the request log: give the `id` of a chat "
            "completion this gateway served (the log keeps the newest COE_REQUEST_LOG_MAX)",
            param="request_id",
        )
    await store.add_feedback(
        FeedbackRecord(
            ts=time.time(), request_id=body.request_id, score=body.score, comment=body.comment
        )
    )
    learned = learner.apply(body.request_id, body.score) if record.status == 200 else {
        "learned": False, "router": record.router, "reason": "the request failed"
    }  # fmt: skip
    return {"object": "coe.feedback", "request_id": body.request_id, "score": body.score, **learned}
