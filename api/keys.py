"""API keys: creation, authentication of `/v1/*` requests, and the admin dependency.

A key is `coe-` and 43 random URL-safe characters, printed once when created; the store keeps
only its SHA-256 and its first characters (to recognise it in `coe keys list`). Its `id` (the
first 12 hex digits of the hash) is what the request log records. While no key exists the
gateway is open, as the embedded default must be; once one exists, every `/v1/*` request needs
`Authorization: Bearer <key>`.

The dashboard's routes (outside `/v1`) protect themselves with the dependency::

    from api.keys import require_admin
    router = APIRouter(prefix="/dashboard", dependencies=[Depends(require_admin)])
    # or, to know who asked: async def page(admin: AdminDep) -> ...
"""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import AdminRequired, APIError, AuthUnavailable, Unauthorized
from api.store import ApiKey, Store, StoreUnavailable

__all__ = [
    "AdminDep",
    "CallerDep",
    "KeyAuth",
    "caller",
    "hash_key",
    "new_key",
    "require_admin",
]

PREFIX = "coe-"
#: The cookie a browser may carry the key in instead of the header (the dashboard).
COOKIE = "coe_key"


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(
    name: str,
    *,
    admin: bool = False,
    rpm: int | None = None,
    tpm: int | None = None,
    budget_usd: float | None = None,
    period: str = "day",
) -> tuple[str, ApiKey]:
    """A fresh secret and the record to store for it (the secret itself is never stored)."""
    if period not in ("day", "month"):
        raise ValueError(f"period must be 'day' or 'month', not {period!r}")
    secret = PREFIX + secrets.token_urlsafe(32)
    digest = hash_key(secret)
    key = ApiKey(
        id=digest[:12],
        name=name,
        hash=digest,
        prefix=secret[:10],
        created=time.time(),
        admin=admin,
        rpm=rpm,
        tpm=tpm,
        budget_usd=budget_usd,
        period=period,
    )
    return secret, key


def _bearer(auth: str) -> str | None:
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _presented(headers: Headers, cookies: dict[str, str] | None = None) -> str | None:
    return _bearer(headers.get("authorization", "")) or (cookies or {}).get(COOKIE)


def _presented_raw(scope: Scope) -> str | None:
    """`_presented` for the middleware, from the raw header list: the first `authorization`
    header, as `Headers.get` finds it, without building a `Headers` per request."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            return _bearer(value.decode("latin-1"))
    return None


async def authenticate(store: Store, secret: str | None) -> ApiKey | None:
    """The caller's key; None while no key exists (an open gateway). Raises `Unauthorized`, or
    `AuthUnavailable` when the store cannot tell which keys exist (it fails closed)."""
    try:
        any_keys, key = await store.lookup_key(hash_key(secret) if secret else None)
    except StoreUnavailable as exc:
        raise AuthUnavailable(str(exc)) from exc
    if not any_keys:
        return None
    if key is None:
        if secret is None:
            raise Unauthorized(
                "this gateway requires an API key: send 'Authorization: Bearer <key>' "
                "(an admin creates keys with `coe keys create`)"
            )
        raise Unauthorized(f"the API key {secret[:10]}… is not valid (unknown or revoked)")
    return key


class KeyAuth:
    """ASGI middleware: authenticate every `/v1/*` request before it is routed.

    A middleware rather than a per-route dependency so that every `/v1` route, including ones
    added later, is covered. The key lands in `request.state.api_key` (None on an open
    gateway); a refusal is a 401 in OpenAI's shape and counted in the metrics.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        try:
            key = await authenticate(state.store, _presented_raw(scope))
        except APIError as exc:
            metrics = getattr(state, "metrics", None)
            if metrics is not None:
                metrics.rejected("auth")
            await exc.response()(scope, receive, send)
            return
        scope.setdefault("state", {})["api_key"] = key
        await self.app(scope, receive, send)


async def caller(request: Request) -> ApiKey | None:
    """The key `KeyAuth` authenticated for this `/v1` request (None on an open gateway)."""
    key: ApiKey | None = getattr(request.state, "api_key", None)
    return key


async def require_admin(request: Request) -> ApiKey | None:
    """A FastAPI dependency for management and dashboard routes: an admin key is required once
    any key exists (header `Authorization: Bearer`, or the `coe_key` cookie for a browser).
    401 without a valid key, 403 with a valid key that is not an admin's."""
    store: Store = request.app.state.store
    key = await authenticate(store, _presented(request.headers, dict(request.cookies)))
    if key is not None and not key.admin:
        raise AdminRequired(f"key {key.name!r} is not an admin key; this needs one")
    return key


CallerDep = Annotated[ApiKey | None, Depends(caller)]
AdminDep = Annotated[ApiKey | None, Depends(require_admin)]
