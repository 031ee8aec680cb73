"""`coe keys create|list|revoke`: manage API keys in the Redis store that `COE_REDIS_URL` names.

Keys must live where every gateway replica reads them, so these commands need Redis: the
in-process store exists only inside one running gateway, out of a CLI's reach.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer

from api.settings import Settings
from api.store import ApiKey, Store

__all__ = ["RedisUrl", "app", "on_redis"]

app = typer.Typer(
    help="Manage API keys (stored hashed in the Redis that COE_REDIS_URL names).",
    no_args_is_help=True,
)

T = TypeVar("T")

RedisUrl = Annotated[
    str | None, typer.Option("--redis-url", help="redis://host:port/db; default COE_REDIS_URL")
]


_NO_REDIS = (
    "keys are kept in Redis, shared by every gateway replica: set COE_REDIS_URL "
    "(or pass --redis-url). Without Redis the gateway runs open, with no keys."
)


def on_redis(redis_url: str | None, op: Callable[..., Awaitable[T]], without: str = _NO_REDIS) -> T:
    """Run `op(store)` against the Redis store of `--redis-url` or `COE_REDIS_URL`; exit 2 with
    `without` when none is configured, 1 when it cannot be reached."""
    from api.store import StoreUnavailable
    from api.store.factory import open_redis

    settings = Settings(redis_url=redis_url) if redis_url else Settings()
    if not settings.redis_url:
        typer.echo(f"error: {without}", err=True)
        raise typer.Exit(2)

    async def main() -> T:
        store: Store = open_redis(settings)
        try:
            await store.ping()
            return await op(store)
        finally:
            await store.aclose()

    try:
        return asyncio.run(main())
    except StoreUnavailable as exc:
        typer.echo(f"error: cannot reach Redis at {settings.redis_url}: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command()
def create(
    name: Annotated[str, typer.Option(help="who or what the key is for (unique among active)")],
    admin: Annotated[bool, typer.Option(help="may manage and see the dashboard")] = False,
    rpm: Annotated[int | None, typer.Option(min=1, help="requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option(min=1, help="tokens per minute")] = None,
    budget_usd: Annotated[float | None, typer.Option(min=0, help="USD per period")] = None,
    period: Annotated[str, typer.Option(help="budget period: day or month (UTC)")] = "day",
    redis_url: RedisUrl = None,
) -> None:
    """Create a key and print it once (only its hash is stored)."""
    from api.keys import new_key

    try:
        secret, key = new_key(
            name, admin=admin, rpm=rpm, tpm=tpm, budget_usd=budget_usd, period=period
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--period") from exc

    async def add(store: Store) -> None:
        await store.add_key(key)

    try:
        on_redis(redis_url, add)
    except ValueError as exc:
        typer.echo(f"error: {exc}; revoke it first or choose another --name", err=True)
        raise typer.Exit(1) from exc
    typer.echo(secret)
    typer.echo(
        f"key {key.name!r} (id {key.id}{', admin' if admin else ''}) created; "
        "store it now: it is not shown again",
        err=True,
    )


@app.command("list")
def list_keys(redis_url: RedisUrl = None) -> None:
    """Every key: name, id, role, limits, spent this period, status."""
    from rich.console import Console
    from rich.table import Table

    from api.limits import period_window

    async def fetch(store: Store) -> list[tuple[ApiKey, int]]:
        now = time.time()
        keys = await store.keys()
        spent = [await store.spent_nano_usd(k.id, period_window(k.period, now)[0]) for k in keys]
        return list(zip(keys, spent, strict=True))

    rows = on_redis(redis_url, fetch)
    table = Table("name", "id", "prefix", "role", "rpm", "tpm", "budget", "spent", "status")
    for key, spent in rows:
        budget = f"${key.budget_usd:g}/{key.period}" if key.budget_usd is not None else "-"
        table.add_row(
            key.name,
            key.id,
            key.prefix + "…",
            "admin" if key.admin else "client",
            str(key.rpm or "-"),
            str(key.tpm or "-"),
            budget,
            f"${spent / 1e9:.6f}",
            "active" if key.revoked is None else time.strftime(
                "revoked %Y-%m-%d %H:%M", time.gmtime(key.revoked)
            ),
        )  # fmt: skip
    Console(width=140).print(table)


@app.command()
def revoke(
    name: Annotated[str, typer.Option(help="the active key's name")],
    redis_url: RedisUrl = None,
) -> None:
    """Revoke the active key with this name (requests with it get 401 at once)."""

    async def drop(store: Store) -> ApiKey | None:
        return await store.revoke_key(name)

    if on_redis(redis_url, drop) is None:
        typer.echo(f"error: no active key named {name!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked key {name!r}")
