"""API keys: open until one exists, then every /v1 request needs one; the admin dependency;
the `coe keys` commands against the real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi import Depends
from typer.testing import CliRunner

from api.cli import app as cli_app
from api.keys import hash_key, new_key, require_admin
from tests.api.conftest import GatewayFactory
from tests.conftest import Gateway

HELLO = [{"role": "user", "content": "Say hello"}]
CHAT = {"model": "coe-auto", "messages": HELLO}


def secret_id(secret: str) -> str:
    return hash_key(secret)[:12]


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


async def test_open_until_a_key_exists_then_401_in_openai_shape(gateway: Gateway) -> None:
    assert (await gateway.client.post("/v1/chat/completions", json=CHAT)).status_code == 200
    secret, key = new_key("ci")
    await gateway.app.state.store.add_key(key)

    missing = await gateway.client.post("/v1/chat/completions", json=CHAT)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    error = missing.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert "Authorization: Bearer" in error["message"]
    wrong = await gateway.client.post(
        "/v1/chat/completions", json=CHAT, headers=bearer("coe-wrong")
    )
    assert wrong.status_code == 401 and "not valid" in wrong.json()["error"]["message"]
    assert (await gateway.client.get("/v1/models")).status_code == 401  # every /v1 route
    assert (await gateway.client.get("/health")).status_code == 200  # not /v1: open
    assert (await gateway.client.get("/metrics")).status_code == 200

    ok = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=bearer(secret))
    assert ok.status_code == 200
    logged = await gateway.app.state.store.get_request(ok.json()["id"])
    assert logged.key_id == key.id and key.id == key.hash[:12]
    assert secret not in repr(await gateway.app.state.store.keys())  # stored hashed

    await gateway.app.state.store.revoke_key("ci")
    again = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=bearer(secret))
    assert again.status_code == 200  # no active key left: open again
    await gateway.app.state.store.add_key(new_key("other")[1])
    again = await gateway.client.post("/v1/chat/completions", json=CHAT, headers=bearer(secret))
    assert again.status_code == 401


async def test_require_admin_guards_management_routes(gateway: Gateway) -> None:
    @gateway.app.get("/admin-only", dependencies=[Depends(require_admin)])
    async def admin_only() -> dict[str, str]:
        return {"ok": "yes"}

    assert (await gateway.client.get("/admin-only")).status_code == 200  # no keys: open
    client_secret, client_key = new_key("client")
    admin_secret, admin_key = new_key("boss", admin=True)
    for key in (client_key, admin_key):
        await gateway.app.state.store.add_key(key)
    assert (await gateway.client.get("/admin-only")).status_code == 401
    refused = await gateway.client.get("/admin-only", headers=bearer(client_secret))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_key_required"
    assert (
        await gateway.client.get("/admin-only", headers=bearer(admin_secret))
    ).status_code == 200
    gateway.client.cookies.set("coe_key", admin_secret)  # a browser on the dashboard
    assert (await gateway.client.get("/admin-only")).status_code == 200


@pytest.mark.integration
async def test_coe_keys_commands_manage_the_keys_a_gateway_on_redis_checks(
    make_gateway: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    env = {"COE_REDIS_URL": redis_url, "COE_REDIS_PREFIX": redis_prefix}

    async def coe(*args: str) -> Any:  # the CLI runs its own event loop: give it a thread
        return await asyncio.to_thread(CliRunner().invoke, cli_app, list(args), env=env)

    created = await coe("keys", "create", "--name", "team-a", "--rpm", "60", "--budget-usd", "5")
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[0]
    assert secret.startswith("coe-") and len(secret) > 40
    duplicate = await coe("keys", "create", "--name", "team-a")
    assert duplicate.exit_code == 1 and "already named" in duplicate.stderr

    async with make_gateway(redis_url=redis_url, redis_prefix=redis_prefix) as gw:
        assert (await gw.client.post("/v1/chat/completions", json=CHAT)).status_code == 401
        ok = await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(secret))
        assert ok.status_code == 200
        listed = await coe("keys", "list")
        assert listed.exit_code == 0 and "team-a" in listed.stdout and "$5/day" in listed.stdout
        assert secret not in listed.stdout
        revoked = await coe("keys", "revoke", "--name", "team-a")
        assert revoked.exit_code == 0
        await coe("keys", "create", "--name", "team-b")
        gone = await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(secret))
        assert gone.status_code == 401
        [logged] = await gw.app.state.store.requests()  # the request log is on Redis too
        assert logged.request_id == ok.json()["id"] and logged.key_id == secret_id(secret)


def test_coe_keys_without_redis_says_so() -> None:
    result = CliRunner().invoke(cli_app, ["keys", "list"], env={"COE_REDIS_URL": ""})
    assert result.exit_code == 2
    assert "COE_REDIS_URL" in result.stderr


@pytest.mark.parametrize(
    ("headers", "secret"),
    [
        ([(b"authorization", b"Bearer coe-abc")], "coe-abc"),
        ([(b"authorization", b"bearer  coe-abc ")], "coe-abc"),
        ([(b"authorization", b"Basic xyz")], None),
        ([(b"authorization", b"Bearer ")], None),
        ([(b"x-other", b"1")], None),
        ([(b"authorization", b"Bearer first"), (b"authorization", b"Bearer second")], "first"),
    ],
)
def test_the_middleware_reads_the_bearer_as_headers_would(
    headers: list[tuple[bytes, bytes]], secret: str | None
) -> None:
    from starlette.datastructures import Headers

    from api.keys import _presented, _presented_raw

    scope = {"type": "http", "headers": headers}
    assert _presented_raw(scope) == secret == _presented(Headers(scope=scope))
