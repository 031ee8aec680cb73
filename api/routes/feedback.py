"""`POST /v1/feedback`: a client's score for a served answer; learning routers update from it."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from api.errors import RequestNotFound
from api.keys import CallerDep
from api.learning import OnlineLearner
from api.schemas import FeedbackRequest
from api.store import FeedbackRecord, Store

router = APIRouter(prefix="/v1", tags=["feedback"])


@router.post("/feedback")
async def feedback(body: FeedbackRequest, request: Request, key: CallerDep) -> dict[str, Any]:
    """Record `score` in [0, 1] for the answer `request_id` (the `id` of a chat completion).

    Only the key that made the request, or an admin key, may score it: another key is told the
    request does not exist (ids of other keys' requests are not confirmed)."""
    store: Store = request.app.state.store
    learner: OnlineLearner = request.app.state.learner
    record = await store.get_request(body.request_id)
    if record is not None and key is not None and not key.admin and record.key_id != key.id:
        record = None
    if record is None:
        raise RequestNotFound(
            f"no request {body.request_id!r} in the request log: give the `id` of a chat "
            "completion this gateway served (the log keeps the newest COE_REQUEST_LOG_MAX)",
            param="request_id",
        )
    await store.add_feedback(
        FeedbackRecord(
            ts=time.time(),
            request_id=body.request_id,
            score=body.score,
            key_id=key.id if key else None,
            comment=body.comment,
        )
    )
    learned = learner.apply(body.request_id, body.score) if record.status == 200 else {
        "learned": False, "router": record.router, "reason": "the request failed"
    }  # fmt: skip
    await learner.save()  # in a worker thread
    return {"object": "coe.feedback", "request_id": body.request_id, "score": body.score, **learned}
