"""The Grafana dashboard (deploy/grafana/coe.json) queries only what `GET /metrics` exports:
every metric name, and every label it groups by, seen in a real scrape after real traffic."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from api.keys import new_key
from tests.api.conftest import GatewayFactory

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "coe.json"
HELLO = [{"role": "user", "content": "Say hello"}]


def queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(query["query"])
    return exprs


def samples(text: str) -> dict[str, set[str]]:
    """Sample name -> the label names seen on it, from Prometheus text."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*?)\})?\s", line)
        assert match, line
        labels = set(re.findall(r'([a-zA-Z_]\w*)="', match.group(3) or ""))
        out.setdefault(match.group(1), set()).update(labels)
    return out


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "coe-gateway" and dashboard["schemaVersion"] >= 36
    graphs = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(graphs) >= 20
    assert all(p["datasource"]["uid"] == "${datasource}" for p in graphs)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("traffic", "error", "latency", "first token", "usd", "cache", "waiting",
                  "resident"):  # fmt: skip
        assert topic in titles, topic


async def test_every_metric_the_dashboard_queries_is_scraped(
    make_gateway: GatewayFactory, redis_url: str, redis_prefix: str
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    async with make_gateway(redis_url=redis_url, redis_prefix=redis_prefix, cache="exact") as gw:
        secret, key = new_key("grafana", rpm=5)
        await gw.app.state.store.add_key(key)
        auth = {"authorization": f"Bearer {secret}"}
        chat = {"model": "coe-auto", "messages": HELLO, "temperature": 0}
        for _ in range(2):  # a miss then a hit of the cache
            assert (
                await gw.client.post("/v1/chat/completions", json=chat, headers=auth)
            ).is_success
        streamed = chat | {"stream": True}
        assert (
            await gw.client.post("/v1/chat/completions", json=streamed, headers=auth)
        ).is_success
        gw.network.down.add("alpha")  # a fallback to beta
        other = chat | {"messages": [{"role": "user", "content": "again"}]}
        assert (await gw.client.post("/v1/chat/completions", json=other, headers=auth)).is_success
        assert (await gw.client.post("/v1/chat/completions", json=chat, headers=auth)).is_success
        refused = await gw.client.post("/v1/chat/completions", json=chat, headers=auth)
        assert refused.status_code == 429  # the sixth request of a 5-per-minute key
        scraped = samples((await gw.client.get("/metrics")).text)
    missing: list[str] = []
    for expr in queries(dashboard):
        names = set(re.findall(r"\b(coe_[a-z_]+)\b", expr))
        assert names, expr
        for name in names - set(scraped):
            missing.append(f"{name} (in {expr})")
        grouped = re.findall(r"by \(([^)]*)\)", expr)
        labels = {label.strip() for group in grouped for label in group.split(",")} - {"le"}
        for name in names & set(scraped):
            if labels <= scraped[name]:
                continue
            missing.append(f"labels {sorted(labels - scraped[name])} of {name} (in {expr})")
    assert not missing, missing
