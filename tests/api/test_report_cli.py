"""`coe report` over a request log on the real Redis: the figures match the records written."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from typer.testing import CliRunner

from api.cli import app as cli_app
from api.store import RequestRecord
from api.store.redis import RedisStore


@pytest.mark.integration
async def test_report_reads_the_log_a_gateway_wrote_to_redis(
    redis_store: RedisStore, redis_url: str, redis_prefix: str
) -> None:
    now = time.time()
    for i, (expert, cost, status) in enumerate(
        [("alpha", 0.01, 200), ("alpha", 0.03, 200), ("beta", 0.10, 200), ("beta", 0.0, 503)]
    ):
        await redis_store.log_request(
            RequestRecord(
                ts=now - 60 + i,
                request_id=f"r{i}",
                model="coe-auto",
                status=status,
                latency_ms=100.0 * (i + 1),
                experts=[expert] if status == 200 else [],
                tried=[expert],
                cost_usd=cost,
                key_id="k1" if i else None,
            )
        )
    await redis_store.log_request(  # two days ago: outside every window
        RequestRecord(ts=now - 2 * 86400, request_id="old", model="x", status=200, latency_ms=1)
    )
    env = {"COE_REDIS_URL": redis_url, "COE_REDIS_PREFIX": redis_prefix}

    def coe(*args: str) -> Any:
        return CliRunner().invoke(cli_app, ["report", *args], env=env)

    result = await asyncio.to_thread(coe, "--window", "1h", "--json")
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["summary"]["requests"] == 4
    assert figures["summary"]["error_rate"] == pytest.approx(0.25)
    assert figures["summary"]["cost_usd"] == pytest.approx(0.14)
    by_expert = {e["expert"]: e for e in figures["cost"]["by_expert"]}
    assert by_expert["alpha"]["cost_usd"] == pytest.approx(0.04)
    assert by_expert["beta"]["usd_per_request"] == pytest.approx(0.10)
    by_key = {k["key_id"]: k["requests"] for k in figures["cost"]["by_key"]}
    assert by_key == {"k1": 3, "(none)": 1}
    latency = {e["expert"]: e["p50_ms"] for e in figures["latency"]["by_expert"]}
    assert latency == {"alpha": pytest.approx(150.0), "beta": pytest.approx(300.0)}

    table = await asyncio.to_thread(coe, "--window", "1h")
    assert table.exit_code == 0, table.output
    assert "4 requests" in table.stdout and "alpha" in table.stdout and "k1" in table.stdout


def test_report_without_redis_or_with_a_bad_window_says_so() -> None:
    no_redis = CliRunner().invoke(cli_app, ["report"], env={"COE_REDIS_URL": ""})
    assert no_redis.exit_code == 2 and "COE_REDIS_URL" in no_redis.stderr
    bad = CliRunner().invoke(cli_app, ["report", "--window", "2d"])
    assert bad.exit_code == 2 and "--window must be one of" in bad.stderr
