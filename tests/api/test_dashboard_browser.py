"""The dashboard in a real browser: a uvicorn gateway over fake experts on real ports, real
traffic, Debian's headless Chromium driven by Selenium, and every chart read back from Chart.js.

Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and `chromium-driver`;
`.ci/run` installs them). Selenium Manager is kept offline: nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml

from api.app import create_app
from api.settings import Settings
from api.store import FeedbackRecord
from experts.engines.llamacpp import free_port
from experts.testing import FakeExpert
from tests.api.eval_reports import write_reports

pytestmark = pytest.mark.integration

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
needs_chromium = pytest.mark.skipif(
    not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
    reason="Debian's chromium and chromium-driver are not installed (apt-get install -y "
    "chromium chromium-driver; .ci/run does it)",
)
WINDOW_S, BUCKET_S = 300, 10  # the "5m" window the page is opened with
CHARTS = [
    "chart-traffic-expert",
    "chart-traffic-model",
    "chart-traffic-rates",
    "chart-cost-hour",
    "chart-cost-expert",
    "chart-cost-key",
    "chart-latency-expert",
    "chart-latency-time",
    "chart-routing-share",
    "chart-routing-cache",
    "chart-routing-load",
    "chart-quality-time",
    "chart-quality-expert",
    "chart-eval-curves",
]


@pytest.fixture
def reports_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return write_reports(tmp_path, monkeypatch)


class Served:
    """A uvicorn server on 127.0.0.1 in a thread of this process (so the test can reach the
    gateway's app state, e.g. its store)."""

    def __init__(self, app: Any, lifespan: str = "on") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, lifespan=lifespan, ws="none", log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"server on {self.url} did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def stack(tmp_path: Path, reports_dir: Path) -> Iterator[tuple[Served, Any, dict[str, FakeExpert]]]:
    fakes = {n: FakeExpert(n, default=f"{n} answers in a few words") for n in ("alpha", "beta")}
    experts = {n: Served(f.app, lifespan="off") for n, f in fakes.items()}
    pool = {
        "experts": [
            {"name": "alpha", "engine": "openai", "base_url": f"{experts['alpha'].url}/v1",
             "input_price": 1.0, "output_price": 2.0, "max_concurrency": 4},
            {"name": "beta", "engine": "openai", "base_url": f"{experts['beta'].url}/v1",
             "input_price": 3.0, "output_price": 6.0, "max_concurrency": 2},
        ]
    }  # fmt: skip
    (tmp_path / "pool.yaml").write_text(yaml.safe_dump(pool))
    settings = Settings(
        pool=tmp_path / "pool.yaml",
        work_dir=tmp_path / "work",
        reports_dir=reports_dir,
        dashboard_refresh_s=1,
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings)
    gateway = Served(app)
    yield gateway, app, fakes
    gateway.stop()
    for server in experts.values():
        server.stop()


def send_traffic(url: str, fakes: dict[str, FakeExpert]) -> dict[str, Any]:
    """Requests of every kind; returns what the gateway told the client about each."""
    hello = [{"role": "user", "content": "Say hello to the dashboard"}]
    sent: list[tuple[str, httpx.Response]] = []
    with httpx.Client(base_url=url, timeout=30) as client:

        def ask(model: str) -> None:
            body = {"model": model, "messages": hello}
            sent.append((model, client.post("/v1/chat/completions", json=body)))

        for model in ["alpha"] * 5 + ["beta"] * 3 + ["coe-auto"] * 4 + ["no-such-model"]:
            ask(model)
        fakes["alpha"].enqueue_error(503, "overloaded")  # coe-auto falls back to beta
        ask("coe-auto")
        stream = {"model": "alpha", "messages": hello, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=stream) as r:
            r.read()
        sent.append(("alpha", r))
    answered: Counter[str] = Counter()
    cost: Counter[str] = Counter()
    for _, r in sent:
        if r.status_code == 200 and r.headers.get("x-coe-experts"):
            expert = r.headers["x-coe-experts"]
            answered[expert] += 1
            cost[expert] += cost_of(r)
    return {
        "models": Counter(m for m, _ in sent),
        "answered": answered,
        "cost_json": cost,
        "errors": sum(r.status_code >= 400 for _, r in sent),
        "ids": {
            r.headers["x-request-id"]: r.headers.get("x-coe-experts")
            for _, r in sent
            if "x-request-id" in r.headers  # an unknown model is refused before it gets one
        },
        "total": len(sent),
    }


def cost_of(response: httpx.Response) -> float:
    """The cost the gateway reported: a header, or for a stream the last chunk's `coe`."""
    if "x-coe-cost-usd" in response.headers:
        return float(response.headers["x-coe-cost-usd"])
    chunks = [
        json.loads(line[len("data: ") :])
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]
    return float(next(c["coe"]["cost_usd"] for c in reversed(chunks) if "coe" in c))


def give_feedback(url: str, app: Any, judged: dict[str, str]) -> None:
    """Through `POST /v1/feedback` once it exists; until then straight into the store."""
    if any(getattr(r, "path", None) == "/v1/feedback" for r in app.routes):
        with httpx.Client(base_url=url) as client:
            for request_id, expert in judged.items():
                score = 1.0 if expert == "alpha" else 0.5
                body = {"request_id": request_id, "score": score}
                assert client.post("/v1/feedback", json=body).status_code < 300
        return
    for request_id, expert in judged.items():
        record = FeedbackRecord(time.time(), request_id, 1.0 if expert == "alpha" else 0.5)
        asyncio.run(app.state.store.add_feedback(record))


def browser(tmp_path: Path) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--window-size=1280,800", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    # the viewport itself at 1280×800 (--window-size counts the window, not the page)
    metrics = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    return driver


def chart(driver: Any, canvas_id: str) -> dict[str, Any]:
    """What Chart.js holds for one canvas: labels and datasets (label + data)."""
    data: dict[str, Any] = driver.execute_script(
        """const c = Chart.getChart(document.getElementById(arguments[0]));
        if (!c) return null;
        return {labels: c.data.labels || [], datasets: c.data.datasets.map(
            d => ({label: d.label, data: d.data}))};""",
        canvas_id,
    )
    assert data is not None, f"{canvas_id} was never drawn"
    return data


def points(data: dict[str, Any], label: str) -> dict[float, float]:
    """A time series' drawn points, x (ms) → y, gaps left out."""
    [dataset] = [d for d in data["datasets"] if d["label"] == label]
    return {p["x"]: p["y"] for p in dataset["data"] if p["y"] is not None}


def series(data: dict[str, Any], label: str) -> list[Any]:
    """A dataset's values: y of the drawn points of a time series, or the bars of a category."""
    [dataset] = [d for d in data["datasets"] if d["label"] == label]
    if dataset["data"] and isinstance(dataset["data"][0], dict):
        return list(points(data, label).values())
    return list(dataset["data"])


def total(values: list[float | None]) -> float:
    return sum(v for v in values if v is not None)


@needs_chromium
def test_every_chart_draws_the_traffic_sent(
    stack: tuple[Served, Any, dict[str, FakeExpert]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser
    gateway, app, fakes = stack
    sent = send_traffic(gateway.url, fakes)
    assert sent["answered"]["alpha"] >= 6 and sent["answered"]["beta"] >= 4
    judged = {rid: e for rid, e in sent["ids"].items() if e in ("alpha", "beta")}
    give_feedback(gateway.url, app, judged)

    driver = browser(tmp_path)
    try:
        driver.get(f"{gateway.url}/dashboard?window=5m")
        deadline = time.monotonic() + 30
        updates = "return window.coeDashboard && window.coeDashboard.updates"
        while driver.execute_script(updates) < 1:
            error = driver.execute_script("return window.coeDashboard.lastError")
            assert error is None, error
            assert time.monotonic() < deadline, "the dashboard never rendered"
            time.sleep(0.2)
        charts = {c: chart(driver, c) for c in CHARTS}
        kpi = driver.execute_script("return document.querySelector('[data-kpi=experts]').innerText")
        table = driver.execute_script(
            "return [...document.querySelectorAll('#eval-table tbody tr')].map(r => r.innerText)"
        )
        chips = driver.execute_script(
            "return [...document.querySelectorAll('#residency .chip')].map(c => c.innerText)"
        )
        driver.save_screenshot(str(tmp_path / "dashboard.png"))
        driver.execute_script("document.getElementById('latency').scrollIntoView()")
        driver.save_screenshot(str(tmp_path / "dashboard-latency.png"))
        driver.execute_script("document.getElementById('offline').scrollIntoView()")
        driver.save_screenshot(str(tmp_path / "dashboard-offline.png"))
    finally:
        driver.quit()
    print(f"screenshots: {tmp_path / 'dashboard.png'} {tmp_path / 'dashboard-offline.png'}")

    per_request = BUCKET_S / 60  # requests/min in one bucket → requests
    traffic = charts["chart-traffic-expert"]
    for expert in ("alpha", "beta"):
        assert total(series(traffic, expert)) * per_request == pytest.approx(
            sent["answered"][expert]
        )
    models = charts["chart-traffic-model"]
    for model, n in sent["models"].items():
        assert total(series(models, model)) * per_request == pytest.approx(n)
    assert max(series(charts["chart-traffic-rates"], "errors")) > 0
    assert max(series(charts["chart-traffic-rates"], "fallbacks")) > 0

    spend = charts["chart-cost-hour"]
    for expert in ("alpha", "beta"):  # USD/hour per bucket → USD
        assert total(series(spend, expert)) * BUCKET_S / 3600 == pytest.approx(
            sent["cost_json"][expert], rel=1e-6
        )
    per_request_cost = charts["chart-cost-expert"]
    assert per_request_cost["labels"] == ["beta", "alpha"]  # dearest first
    assert all(v > 0 for v in per_request_cost["datasets"][0]["data"])
    assert charts["chart-cost-key"]["labels"] == ["(none)"]

    latency = charts["chart-latency-expert"]
    assert sorted(latency["labels"]) == ["alpha", "beta"]
    assert all(v > 0 for v in series(latency, "total p50"))
    assert any(v is not None for v in series(latency, "first token p50"))  # the stream
    assert total(series(charts["chart-latency-time"], "p95")) > 0

    share = charts["chart-routing-share"]
    sums = [a + b for a, b in zip(series(share, "alpha"), series(share, "beta"), strict=True)]
    assert sums and all(s == pytest.approx(100) for s in sums)
    assert series(charts["chart-routing-cache"], "cache hits")  # drawn, 0 % (no cache yet)
    load = charts["chart-routing-load"]
    assert load["labels"] == ["alpha", "beta"]
    assert series(load, "max concurrency") == [4, 2]
    assert series(load, "waiting (queue depth)") == [0, 0]
    assert chips == ["alpha: up · resident", "beta: up · resident"]
    assert kpi == "2 / 2"

    scores = points(charts["chart-quality-time"], "mean score")
    counts = points(charts["chart-quality-time"], "feedback count")
    n_alpha = sum(e == "alpha" for e in judged.values())
    expected = (n_alpha + 0.5 * (len(judged) - n_alpha)) / len(judged)
    assert total(list(counts.values())) == len(judged)
    assert sum(scores[x] * counts[x] for x in scores) / len(judged) == pytest.approx(expected)
    quality = charts["chart-quality-expert"]
    assert dict(zip(quality["labels"], quality["datasets"][0]["data"], strict=True)) == {
        "alpha": 1.0,
        "beta": 0.5,
    }

    report = json.loads((app.state.settings.reports_dir / "llmrouter" / "report.json").read_text())
    curves = charts["chart-eval-curves"]
    labels = [d["label"] for d in curves["datasets"]]
    assert {"category", "mf", "cheapest", "◆ oracle"} <= set(labels)
    assert f"★ best single ({report['best_single']})" in labels
    [mf] = [d["data"] for d in curves["datasets"] if d["label"] == "mf"]
    assert sorted((p["x"], p["y"], p["w"]) for p in mf) == sorted(
        tuple(point) for point in report["routers"]["mf"]["curve"]
    )
    assert len(table) == len(report["routers"])
    assert any(row.startswith("★ best_single") for row in table)
    assert any(row.startswith("◆ oracle") for row in table)
    assert (tmp_path / "dashboard.png").stat().st_size > 10_000


@needs_chromium
def test_the_page_asks_for_the_admin_key_and_sends_it(
    stack: tuple[Served, Any, dict[str, FakeExpert]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the admin dependency will do once keys exist, played by a middleware here: the
    figures answer 401 without the key; the page (a shell with no data) still loads, asks for
    the key, and sends it as a bearer token from then on."""
    monkeypatch.setenv("SE_OFFLINE", "true")
    gateway, app, fakes = stack
    send_traffic(gateway.url, fakes)
    seen: list[str | None] = []

    async def admin_only(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/dashboard/api/"):
            auth = dict(scope["headers"]).get(b"authorization")
            seen.append(auth.decode() if auth else None)
            if auth != b"Bearer s3cret":
                body = b'{"error": {"message": "admin key required", "type": "auth"}}'
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await inner(scope, receive, send)

    inner = app.middleware_stack
    app.middleware_stack = admin_only
    from selenium.webdriver.common.by import By

    driver = browser(tmp_path)
    try:
        driver.get(f"{gateway.url}/dashboard?window=5m")
        form = driver.find_element(By.ID, "keyform")
        deadline = time.monotonic() + 30
        while not form.is_displayed():
            assert time.monotonic() < deadline, "the page never asked for a key"
            time.sleep(0.1)
        assert driver.find_element(By.ID, "status").text == "admin key required"
        driver.find_element(By.ID, "key").send_keys("s3cret")
        form.submit()
        while driver.execute_script("return window.coeDashboard.updates") < 1:
            assert time.monotonic() < deadline, "no figures after the key was given"
            time.sleep(0.1)
        drawn = chart(driver, "chart-traffic-expert")
    finally:
        driver.quit()
        app.middleware_stack = inner
    assert None in seen and "Bearer s3cret" in seen
    assert total(series(drawn, "alpha")) > 0
