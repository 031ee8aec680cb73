"""The dashboard's figures: aggregation on hand-made logs, and the JSON endpoints end to end."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from api.dashboard import KeyBudget, StoreBudgets
from api.dashboard.aggregate import (
    NO_EXPERT,
    Frame,
    cost,
    latency,
    quality,
    routing,
    summary,
    traffic,
)
from api.dashboard.models import ExpertLoad
from api.dashboard.reports import load_reports
from api.dashboard.service import FrameCache
from api.keys import new_key
from api.store import FeedbackRecord, RequestRecord
from tests.api.eval_reports import write_reports
from tests.conftest import Gateway

NOW = 1_800_000_000.0  # a multiple of every bucket width: buckets start on round times
HELLO = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
def reports_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return write_reports(tmp_path, monkeypatch)


def rec(ago: float, experts: list[str], status: int = 200, **fields: object) -> RequestRecord:
    defaults: dict[str, object] = {"model": "coe-auto", "latency_ms": 100.0, "tried": experts}
    return RequestRecord(
        ts=NOW - ago,
        request_id=f"r{ago}-{'-'.join(experts)}",
        status=status,
        experts=experts,
        **(defaults | fields),  # type: ignore[arg-type]
    )


LOG = [
    rec(250, ["alpha"], cost_usd=0.01, latency_ms=100, ttft_ms=20, stream=True),
    rec(245, ["alpha"], cost_usd=0.01, latency_ms=300, model="alpha"),
    rec(
        120,
        ["beta"],
        cost_usd=0.04,
        latency_ms=900,
        tried=["alpha", "beta"],
        failed=["alpha"],
        key_id="k1",
    ),
    rec(115, ["alpha", "beta"], cost_usd=0.06, latency_ms=2000, model="coe-compose"),
    rec(30, [], status=503, tried=["beta"], failed=["beta"], error="beta: down", cost_usd=0.0),
    rec(25, ["alpha"], cost_usd=0.01, cache_hit=True, key_id="k1"),
    rec(400, ["alpha"], cost_usd=9.0),  # before the 5-minute window: never counted
]


def frame() -> Frame:
    return Frame.build(LOG, "5m", NOW)


def test_window_grid_and_requests_per_bucket() -> None:
    f = frame()
    assert (f.width, f.count) == (10, 30)
    assert f.start == NOW - 290 and f.t[-1] == NOW
    report = traffic(f)
    alpha = report.by_expert.series["alpha"]
    # bucket of NOW-250 holds two alpha answers (250 and 245 s ago): 2 per 10 s = 12/min
    assert alpha[4] == pytest.approx(12.0)
    assert sum(alpha) / 6 == pytest.approx(4)  # four answers by alpha (one composed)
    assert sum(report.by_expert.series[NO_EXPERT]) / 6 == pytest.approx(1)
    assert set(report.by_model.series) == {"coe-auto", "alpha", "coe-compose"}
    # bucket 17 (120 and 115 s ago): a fallback, and a composed answer that called two experts
    # (both answered: not a fallback)
    assert report.rates.series["fallback_rate"][17] == 0.5
    assert report.rates.series["error_rate"][26] == 0.5  # 30 s ago failed, 25 s ago did not
    assert report.rates.series["error_rate"][0] is None  # no requests, no rate
    assert report.status == {"2xx": 5, "5xx": 1}


def test_cost_splits_a_composed_answer_and_sums_per_key_with_budgets() -> None:
    budgets = {"k1": KeyBudget(budget_usd=1.0, used_usd=0.25), "idle": KeyBudget(2.0, 0.0)}
    report = cost(frame(), budgets)
    by_expert = {e.expert: e for e in report.by_expert}
    assert set(by_expert) == {"alpha", "beta"}  # the failed request cost nothing
    assert by_expert["alpha"].cost_usd == pytest.approx(0.03 + 0.03)
    assert by_expert["beta"].cost_usd == pytest.approx(0.04 + 0.03)
    assert by_expert["beta"].requests == pytest.approx(1.5)
    assert by_expert["beta"].usd_per_request == pytest.approx(0.07 / 1.5)
    hours = 290 / 3600
    assert by_expert["alpha"].usd_per_hour == pytest.approx(0.06 / hours)
    # USD/hour per bucket integrates back to the dollars spent
    assert sum(report.usd_per_hour.series["beta"]) * 10 / 3600 == pytest.approx(0.07)
    keys = {k.key_id: k for k in report.by_key}
    assert keys["k1"].cost_usd == pytest.approx(0.05) and keys["k1"].requests == 2
    assert keys["k1"].budget_used_share == pytest.approx(0.25)
    assert keys["(none)"].budget_usd is None and keys["(none)"].requests == 4
    assert keys["idle"].requests == 0 and keys["idle"].budget_usd == 2.0
    assert cost(frame(), None).budgets == "no keys configured"


def test_latency_is_per_single_expert_answer_and_ttft_from_streams() -> None:
    report = latency(frame())
    alpha = next(e for e in report.by_expert if e.expert == "alpha")
    assert alpha.requests == 3  # the composed answer is nobody's latency
    assert alpha.p50_ms == pytest.approx(100.0)
    assert alpha.p95_ms == pytest.approx(280.0)  # numpy's linear percentile of 100, 100, 300
    assert alpha.ttft_p50_ms == pytest.approx(20.0)
    beta = next(e for e in report.by_expert if e.expert == "beta")
    assert beta.ttft_p50_ms is None
    assert report.over_time.series["p50_ms"][4] == pytest.approx(200.0)


def test_routing_share_sums_to_one_and_cache_hits_count() -> None:
    load = [ExpertLoad(expert="alpha", up=True, in_flight=1, waiting=3, max_concurrency=4,
                       resident=True)]  # fmt: skip
    report = routing(frame(), load)
    shares = report.share.series
    # bucket 17: beta answered alone, then alpha and beta together: beta got 2 of the 3 calls
    assert shares["alpha"][17] == pytest.approx(1 / 3)
    assert shares["beta"][17] == pytest.approx(2 / 3)
    for a, b in zip(shares["alpha"], shares["beta"], strict=True):
        assert a is None or a + b == pytest.approx(1.0)
    assert report.cache_hit_rate_overall == pytest.approx(1 / 6)
    assert report.load[0].waiting == 3


def test_quality_over_time_and_per_expert() -> None:
    ids = [r.request_id for r in LOG]
    feedback = [
        FeedbackRecord(NOW - 100, ids[3], 1.0),  # the composed answer: both experts
        FeedbackRecord(NOW - 95, ids[2], 0.0),
        FeedbackRecord(NOW - 10, "gone", 0.5),  # its request is not in the log any more
    ]
    experts_of = {r.request_id: r.experts for r in LOG}
    report = quality(frame(), feedback, experts_of)
    assert report.count == 3
    assert report.by_expert == {"alpha": 1.0, "beta": 0.5}
    assert report.over_time.series["mean_score"][19] == pytest.approx(0.5)
    assert report.over_time.series["count"][19] == 2
    assert report.over_time.series["count"][0] == 0
    s = summary(frame(), feedback, experts_up=1, experts_total=2)
    assert s.feedback_count == 3 and s.feedback_mean == pytest.approx(0.5)


def test_summary_and_an_empty_window() -> None:
    s = summary(frame(), [], 2, 2)
    assert s.requests == 6
    assert s.error_rate == pytest.approx(1 / 6)
    assert s.fallback_rate == pytest.approx(1 / 6)  # the composed answer is no fallback
    assert s.cost_usd == pytest.approx(0.13) and s.usd_per_request == pytest.approx(0.13 / 6)
    empty = Frame.build([], "1h", NOW)
    assert summary(empty, [], 0, 0).error_rate is None
    assert traffic(empty).by_expert.series == {}
    assert cost(empty, None).by_expert == [] and latency(empty).by_expert == []
    assert routing(empty, []).cache_hit_rate_overall is None
    assert quality(empty, [], {}).count == 0


# ---- the endpoints ------------------------------------------------------------------------


async def test_endpoints_report_the_requests_sent_through_the_gateway(gateway: Gateway) -> None:
    for model in ("alpha", "alpha", "beta", "coe-auto", "nope"):
        await gateway.client.post("/v1/chat/completions", json={"model": model, "messages": HELLO})
    [first, *_] = await gateway.app.state.store.requests()
    await gateway.app.state.store.add_feedback(FeedbackRecord(time.time(), first.request_id, 0.8))
    get = gateway.client.get
    s = (await get("/dashboard/api/summary", params={"window": "5m"})).json()
    assert s["requests"] == 5 and s["error_rate"] == pytest.approx(0.2)
    assert (s["experts_up"], s["experts_total"]) == (2, 2)
    assert s["feedback_mean"] == pytest.approx(0.8)
    t = (await get("/dashboard/api/traffic?window=5m")).json()
    assert sum(t["by_expert"]["series"]["alpha"]) / 6 == pytest.approx(3)  # alpha ×2 + coe-auto
    assert sum(t["by_model"]["series"]["nope"]) / 6 == pytest.approx(1)
    c = (await get("/dashboard/api/cost?window=5m")).json()
    per_request = {e["expert"]: e["usd_per_request"] for e in c["by_expert"]}
    assert per_request["beta"] > per_request["alpha"] > 0  # beta's prices are 3× alpha's
    assert c["budgets"] == "no keys configured"
    lat = (await get("/dashboard/api/latency?window=5m")).json()
    assert {e["expert"] for e in lat["by_expert"]} == {"alpha", "beta"}
    r = (await get("/dashboard/api/routing?window=5m")).json()
    assert [(x["expert"], x["up"], x["resident"]) for x in r["load"]] == [
        ("alpha", True, True),
        ("beta", True, True),
    ]
    q = (await get("/dashboard/api/quality?window=5m")).json()
    assert q["by_expert"] == {"alpha": pytest.approx(0.8)}


async def test_window_is_validated_with_an_openai_shaped_error(gateway: Gateway) -> None:
    r = await gateway.client.get("/dashboard/api/traffic", params={"window": "7m"})
    assert r.status_code == 400
    assert "window" in r.json()["error"]["message"]


async def test_sources_on_app_state_are_used(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Budgets:
        async def budgets(self) -> dict[str, KeyBudget]:
            return {"team-a": KeyBudget(budget_usd=10.0, used_usd=2.5)}

    gateway.app.state.budgets = Budgets()
    board = gateway.app.state.pool.load_board
    real = board.snapshot
    monkeypatch.setattr(  # as if seven calls were queued for beta
        board, "snapshot", lambda: real() | {"beta": replace(real()["beta"], queued=7)}
    )
    c = (await gateway.client.get("/dashboard/api/cost")).json()
    assert c["by_key"] == [
        {"key_id": "team-a", "name": None, "requests": 0, "cost_usd": 0.0,
         "usd_per_request": None, "budget_usd": 10.0, "budget_used_usd": 2.5,
         "budget_used_share": 0.25, "budget_period": None}
    ]  # fmt: skip
    r = (await gateway.client.get("/dashboard/api/routing")).json()
    assert {x["expert"]: x["waiting"] for x in r["load"]} == {"alpha": 0, "beta": 7}
    monkeypatch.setattr(board, "snapshot", real)
    gateway.network.down.add("alpha")
    await gateway.client.post("/v1/chat/completions", json={"model": "alpha", "messages": HELLO})
    r = (await gateway.client.get("/dashboard/api/routing")).json()
    assert r["load"][0]["up"] is False and "alpha" in r["load"][0]["last_error"]


async def test_evaluations_read_coe_eval_reports_and_list_broken_ones(
    gateway: Gateway, reports_dir: Path
) -> None:
    (reports_dir / "broken").mkdir()
    (reports_dir / "broken" / "report.json").write_text("{not json")
    (reports_dir / "other").mkdir()
    (reports_dir / "other" / "report.json").write_text(json.dumps({"routers": {}}))
    gateway.app.state.settings.reports_dir = reports_dir
    body = (await gateway.client.get("/dashboard/api/evaluations")).json()
    [report] = body["reports"]
    written = json.loads((reports_dir / "llmrouter" / "report.json").read_text())
    assert report["id"] == "llmrouter" and report["best_single"] == written["best_single"]
    routers = {r["name"]: r for r in report["routers"]}
    assert routers["oracle"]["reference"] == "oracle"
    assert routers["best_single"]["reference"] == "best_single"
    assert routers["mf"]["reference"] is None and routers["mf"]["kind"] == "router"
    assert routers["mf"]["metrics"]["aiq"] == pytest.approx(written["routers"]["mf"]["aiq"])
    costs = [p["cost_usd"] for p in routers["mf"]["curve"]]
    assert costs == sorted(costs) and len(costs) == len(written["routers"]["mf"]["curve"])
    assert [s["model"] for s in report["singles"] if s["best"]] == [written["best_single"]]
    errors = {e["id"]: e["error"] for e in body["errors"]}
    assert errors["broken"].startswith("JSONDecodeError")
    assert "missing field" in errors["other"]


async def test_concurrent_figures_share_one_table_per_window() -> None:
    builds = 0

    async def build() -> Frame:
        nonlocal builds
        builds += 1
        await asyncio.sleep(0.01)
        return frame()

    cache = FrameCache(ttl_s=60)
    frames = await asyncio.gather(*(cache.get("5m", build) for _ in range(6)))
    assert builds == 1 and all(f is frames[0] for f in frames)
    await cache.get("1h", build)
    assert builds == 2
    cache.ttl_s = 0
    await cache.get("5m", build)
    assert builds == 3


@dataclass
class Key:
    id: str
    name: str
    budget_usd: float | None = None
    period: str = "day"
    revoked: float | None = None


class KeyStore:
    """What `StoreBudgets` reads from a store that keeps keys (the Redis/memory stores)."""

    def __init__(self, keys: list[Key], spent: dict[tuple[str, str], int]) -> None:
        self._keys, self.spent = keys, spent

    async def keys(self) -> list[Key]:
        return self._keys

    async def spent_nano_usd(self, key_id: str, period: str) -> int:
        return self.spent.get((key_id, period), 0)


def window_of(period: str, now: float) -> tuple[str, int, float]:
    return ("2026-11" if period == "month" else "2026-11-23"), 0, 0.0


async def test_store_budgets_read_active_keys_in_their_current_period() -> None:
    store = KeyStore(
        [
            Key("k1", "team-a", budget_usd=10.0),
            Key("k2", "team-b", budget_usd=100.0, period="month"),
            Key("k3", "no-budget"),
            Key("k4", "gone", budget_usd=5.0, revoked=1.0),
        ],
        {("k1", "2026-11-23"): 2_500_000_000, ("k2", "2026-11"): 1_000_000_000},
    )
    budgets = await StoreBudgets(store, window_of).budgets()
    assert budgets == {
        "k1": KeyBudget(10.0, 2.5, "team-a", "day"),
        "k2": KeyBudget(100.0, 1.0, "team-b", "month"),
    }
    report = cost(frame(), budgets)
    assert report.budgets == "from the key store"
    team_a = next(k for k in report.by_key if k.key_id == "k1")
    assert (team_a.name, team_a.budget_used_share, team_a.budget_period) == ("team-a", 0.25, "day")
    assert await StoreBudgets(KeyStore([], {}), window_of).budgets() is None
    assert cost(frame(), {}).budgets == "no key has a budget"


def test_reports_dir_unset_or_missing(tmp_path: Path) -> None:
    assert load_reports(None).reports == []
    missing = load_reports(tmp_path / "nope")
    assert "is not a directory" in missing.errors[0].error


async def test_the_page_and_its_assets_are_served_from_the_package(gateway: Gateway) -> None:
    page = await gateway.client.get("/dashboard")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/dashboard/static/vendor/chart.umd.min.js" in page.text
    assert "https://" not in page.text  # no CDN: the page works offline
    chart = await gateway.client.get("/dashboard/static/vendor/chart.umd.min.js")
    assert chart.status_code == 200 and "Chart.js v4.6.1" in chart.text[:200]
    licence = await gateway.client.get("/dashboard/static/vendor/chart.js-LICENSE.md")
    assert "MIT" in licence.text
    for bad in ("nope.js", "..%2F..%2Fapp.py", "%2E%2E/%2E%2E/settings.py"):
        r = await gateway.client.get(f"/dashboard/static/{bad}")
        assert r.status_code == 404, bad


async def test_openapi_documents_every_figure(gateway: Gateway) -> None:
    spec = (await gateway.client.get("/openapi.json")).json()
    for name in ("summary", "traffic", "cost", "latency", "routing", "quality", "evaluations"):
        op = spec["paths"][f"/dashboard/api/{name}"]["get"]
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema["$ref"].startswith("#/components/schemas/"), name
    assert "/dashboard/static/{path}" not in spec["paths"]


async def test_with_keys_the_figures_need_an_admin_key_and_show_each_keys_budget(
    gateway: Gateway,
) -> None:
    """The wiring in `create_app`: data behind `require_admin`, the page open, budgets read
    from the key store the limiter charges."""
    team_secret, team = new_key("team", budget_usd=1.0)
    admin_secret, admin = new_key("boss", admin=True)
    for key in (team, admin):
        await gateway.app.state.store.add_key(key)
    chat = {"model": "alpha", "messages": HELLO}
    sent = await gateway.client.post(
        "/v1/chat/completions", json=chat, headers={"authorization": f"Bearer {team_secret}"}
    )
    assert sent.status_code == 200
    spent = sent.json()["coe"]["cost_usd"]

    assert (await gateway.client.get("/dashboard/api/cost")).status_code == 401
    refused = await gateway.client.get(
        "/dashboard/api/cost", headers={"authorization": f"Bearer {team_secret}"}
    )
    assert refused.status_code == 403
    assert (await gateway.client.get("/dashboard")).status_code == 200  # asks for the key
    c = await gateway.client.get(
        "/dashboard/api/cost?window=5m", headers={"authorization": f"Bearer {admin_secret}"}
    )
    assert c.status_code == 200
    keys = {k["key_id"]: k for k in c.json()["by_key"]}
    assert keys[team.id]["budget_usd"] == 1.0
    assert keys[team.id]["budget_used_usd"] == pytest.approx(spent, rel=1e-3)
