"""Every error the API returns, in OpenAI's envelope: `{"error": {message, type, param, code}}`.

    APIError                      base: status code, type, code, param
    ├── InvalidRequest     400    the body is malformed or a value is out of range
    │   └── RejectedByExpert   4xx  the expert refused the request itself (e.g. context too long)
    ├── Unauthorized       401    keys exist and the request has none, or an unknown one
    ├── AdminRequired      403    the key is valid but not an admin key
    ├── ModelNotFound      404    `model` names no expert and no virtual model
    ├── RequestNotFound    404    feedback names a request the log does not hold
    ├── PayloadTooLarge    413    the body exceeds `max_body_bytes`
    ├── RateLimited        429    the key's requests or tokens per minute are used up
    ├── BudgetExceeded     429    the key's USD budget for this day or month is used up
    ├── NotImplementedYet  501    a documented model whose implementation has not landed
    ├── NoExpertAvailable  503    every expert tried failed (lists them)
    ├── Overloaded         503    every expert's queue is full or its wait too long (retry-after)
    ├── AuthUnavailable    503    keys are required but cannot be checked now (retry-after)
    └── UpstreamTimeout    504    every expert tried timed out

FastAPI's validation errors and Starlette's HTTP errors are converted to the same envelope, so a
client never sees another shape, and a bad request never becomes a 500.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "ERROR_RESPONSES",
    "APIError",
    "AdminRequired",
    "AuthUnavailable",
    "BudgetExceeded",
    "ErrorResponse",
    "InvalidRequest",
    "ModelNotFound",
    "NoExpertAvailable",
    "NotImplementedYet",
    "Overloaded",
    "PayloadTooLarge",
    "RateLimited",
    "RejectedByExpert",
    "RequestNotFound",
    "Unauthorized",
    "UpstreamTimeout",
    "error_body",
    "install_error_handlers",
]

log = logging.getLogger("coe.api")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # e.g. `tried`: the experts tried and why each failed

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error envelope: every error status of this API answers with it."""

    error: ErrorDetail


_STATUSES = {
    400: "the body is malformed, a value is out of range, or no expert fits its limits",
    401: "API keys exist and the request has none, or an unknown one",
    403: "the key is valid but not an admin key",
    404: "the model, the request (feedback) or the file does not exist",
    413: "the body is larger than COE_MAX_BODY_BYTES, or the expert found the prompt too long",
    422: "the expert refused the request itself",
    429: "the key's requests, tokens per minute or budget are used up (`retry-after`)",
    500: "an unexpected error (a bug: the message says what happened)",
    501: "a documented model whose implementation has not landed",
    503: "no expert could answer, the experts are overloaded (`retry-after`), or keys cannot be "
    "checked now",
    504: "every expert tried timed out",
}

#: Every error a route may answer, for the OpenAPI document (`include_router(responses=...)`).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in _STATUSES.items()
}


def error_body(
    message: str, type_: str, param: str | None = None, code: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}


class APIError(Exception):
    status_code = 500
    type = "server_error"
    code: str | None = None
    headers: dict[str, str] | None = None

    def __init__(self, message: str, param: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.extra = extra

    def response(self) -> JSONResponse:
        body = error_body(self.message, self.type, self.param, self.code, **self.extra)
        return JSONResponse(body, status_code=self.status_code, headers=self.headers)


class InvalidRequest(APIError):
    status_code = 400
    type = "invalid_request_error"


class RejectedByExpert(InvalidRequest):
    """An expert's own 400/413/422, passed on with its status: another expert would refuse too."""

    def __init__(self, message: str, status_code: int, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.status_code = status_code


class Unauthorized(APIError):
    status_code = 401
    type = "invalid_request_error"
    code = "invalid_api_key"
    headers = {"www-authenticate": "Bearer"}  # noqa: RUF012  (read-only class default)


class AdminRequired(APIError):
    status_code = 403
    type = "invalid_request_error"
    code = "admin_key_required"


class RateLimited(APIError):
    """429 with `retry-after`: seconds until the key's minute window ends."""

    status_code = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(
        self, message: str, retry_after_s: float, reason: str = "rpm", **extra: Any
    ) -> None:
        super().__init__(message, **extra)
        self.reason = reason  # which limit: "rpm", "tpm" or "budget" (for the metrics)
        self.headers = {"retry-after": str(max(1, math.ceil(retry_after_s)))}


class BudgetExceeded(RateLimited):
    """429 with `retry-after`: seconds until the key's budget period starts over."""

    type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(self, message: str, retry_after_s: float, **extra: Any) -> None:
        super().__init__(message, retry_after_s, "budget", **extra)


class ModelNotFound(APIError):
    status_code = 404
    type = "invalid_request_error"
    code = "model_not_found"


class RequestNotFound(APIError):
    status_code = 404
    type = "invalid_request_error"
    code = "request_not_found"


class PayloadTooLarge(APIError):
    status_code = 413
    type = "invalid_request_error"
    code = "request_too_large"


class NotImplementedYet(APIError):
    status_code = 501
    type = "not_implemented_error"
    code = "not_implemented"


class NoExpertAvailable(APIError):
    status_code = 503
    type = "service_unavailable_error"
    code = "no_expert_available"


class Overloaded(NoExpertAvailable):
    """503 with `retry-after`: the experts' queues are full (load shedding, not an endless
    queue); the client should come back later."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: float, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.headers = {"retry-after": str(max(1, math.ceil(retry_after_s)))}


class AuthUnavailable(APIError):
    """503 with `retry-after`: API keys are required but cannot be checked (the shared store is
    unreachable and this gateway never saw its keys). Failing closed: nobody is let in."""

    status_code = 503
    type = "service_unavailable_error"
    code = "auth_unavailable"

    def __init__(self, message: str, retry_after_s: float = 5, **extra: Any) -> None:
        super().__init__(message, **extra)
        self.headers = {"retry-after": str(max(1, math.ceil(retry_after_s)))}


class UpstreamTimeout(APIError):
    status_code = 504
    type = "timeout_error"
    code = "upstream_timeout"


#: The tags of a discriminated union (a message's role), which pydantic puts in an error's loc.
_TAGS = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _loc_to_param(loc: tuple[Any, ...], kind: str | None = None) -> str:
    """`messages.0.content` for pydantic's `("body", "messages", 0, "user", "content")`."""
    tag = [i > 0 and isinstance(loc[i - 1], int) and p in _TAGS for i, p in enumerate(loc)]
    parts = [str(p) for p, is_tag in zip(loc, tag, strict=True) if p != "body" and not is_tag]
    if kind == "union_tag_invalid" or kind == "union_tag_not_found":
        parts.append("role")
    return ".".join(parts)


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    param = _loc_to_param(tuple(first.get("loc", ())), str(first.get("type", "")))
    if first.get("type") == "json_invalid":
        message = "the request body is not valid JSON"
    elif first.get("type") == "missing" and param:
        message = f"'{param}' is required"
    else:
        message = f"{param or 'body'}: {first.get('msg', 'invalid value')}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return InvalidRequest(message, param=param or None).response()


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
    code = "request_too_large" if exc.status_code == 413 else str(exc.status_code)
    body = error_body(str(exc.detail), type_, code=code)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    body = error_body("internal error in the gateway; see its log", "server_error")
    return JSONResponse(body, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
