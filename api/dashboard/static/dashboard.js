/* coe dashboard: polls /dashboard/api/* and draws each figure with Chart.js (vendored).
 *
 * Every chart is a Chart.js instance kept in `window.coeDashboard.charts` by canvas id, and the
 * last JSON of every endpoint in `window.coeDashboard.data`, so a test (or a curious operator in
 * the console) can read back exactly what is drawn. An admin key, when the gateway asks for one,
 * is kept in localStorage and sent as a bearer token with every figure request.
 */
"use strict";

(() => {
  const API = "/dashboard/api";
  const KEY_STORE = "coe-dashboard-key";
  const PALETTE = ["#5aa9ff", "#ffb454", "#3ecf8e", "#ff6b6b", "#c792ea", "#4dd0e1",
                   "#f78c6c", "#a3be8c", "#ffd479", "#82aaff", "#e879f9", "#94a3b8"];
  const METRICS = [
    ["aiq", "AIQ"], ["apgr", "APGR"], ["acc_at_best_single_cost", "acc ≤ best cost"],
    ["cost_share_to_match_best_single", "cost to match best"],
    ["cost_share_at_95pct_best_quality", "cost at 95%"], ["cpt50", "CPT50"],
    ["cpt80", "CPT80"], ["arena_score", "Arena"],
  ];
  const LOWER_IS_BETTER = new Set(["cost_share_to_match_best_single",
                                   "cost_share_at_95pct_best_quality", "cpt50", "cpt80"]);

  const state = {
    window: "1h", refreshMs: 5000, charts: {}, data: {}, updates: 0, lastError: null,
    report: null, colors: new Map(),
  };
  window.coeDashboard = state;

  Chart.defaults.color = "#8b95a3";
  Chart.defaults.borderColor = "#262d37";
  Chart.defaults.font.size = 11;
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.plugins.legend.labels.boxWidth = 10;
  Chart.defaults.plugins.legend.labels.boxHeight = 10;

  // ---- formatting ---------------------------------------------------------------------------
  const $ = (sel) => document.querySelector(sel);
  const num = (v, d = 1) => (v == null ? "–" : Number(v).toFixed(d));
  const pct = (v) => (v == null ? "–" : `${(100 * v).toFixed(1)} %`);
  const ms = (v) => (v == null ? "–" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(0)} ms`);
  function usd(v) {
    if (v == null) return "–";
    if (v === 0) return "$0";
    if (Math.abs(v) >= 1) return `$${v.toFixed(2)}`;
    if (Math.abs(v) >= 0.01) return `$${v.toFixed(4)}`;
    return `$${Number(v.toPrecision(3))}`;
  }
  /** Log-axis ticks at 1, 2 and 5 × 10^k only: the rest crowd the axis. */
  function logTick(v) {
    const m = v / 10 ** Math.floor(Math.log10(v) + 1e-9);
    return [1, 2, 5].some((k) => Math.abs(m - k) < 1e-6) ? usd(v) : "";
  }
  function clock(msSinceEpoch) {
    const d = new Date(msSinceEpoch);
    const hm = d.toTimeString().slice(0, 5);
    return state.window === "5m" || state.window === "15m" ? d.toTimeString().slice(0, 8) : hm;
  }
  function colorFor(name) {
    if (!state.colors.has(name)) state.colors.set(name, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(name);
  }

  // ---- fetching -----------------------------------------------------------------------------
  class AuthNeeded extends Error {}

  async function getJSON(path) {
    const headers = { Accept: "application/json" };
    const key = localStorage.getItem(KEY_STORE);
    if (key) headers.Authorization = `Bearer ${key}`;
    const response = await fetch(API + path, { headers });
    if (response.status === 401 || response.status === 403) throw new AuthNeeded(path);
    const body = await response.json();
    if (!response.ok) throw new Error(`${path}: ${(body.error || {}).message || response.status}`);
    return body;
  }

  // ---- charts -------------------------------------------------------------------------------
  function upsert(id, config) {
    const canvas = document.getElementById(id);
    let chart = state.charts[id];
    if (!chart) {
      chart = new Chart(canvas, config);
      state.charts[id] = chart;
    } else {
      chart.data = config.data;
      chart.options = config.options;
      chart.update("none");
    }
    const points = config.data.datasets.reduce(
      (n, ds) => n + ds.data.filter((p) => p != null && (typeof p !== "object" || p.y != null)).length, 0);
    canvas.dataset.points = String(points);
    canvas.dataset.series = JSON.stringify(config.data.datasets.map((ds) => ds.label));
    return chart;
  }

  /** Seconds between time-axis ticks per window: round clock times, 5 to 6 of them. */
  const TICK_S = { "5m": 60, "15m": 180, "1h": 600, "6h": 3600, "24h": 4 * 3600 };

  function timeAxis(series) {
    const min = series.t[0] * 1000;
    const max = (series.t[0] + series.t.length * series.bucket_s) * 1000;
    const step = 1000 * (TICK_S[state.window] || 600);
    return {
      type: "linear", min, max, bounds: "data",
      title: { display: true, text: "time (local)" },
      ticks: { callback: (v) => clock(v), maxRotation: 0, autoSkip: false },
      afterBuildTicks: (axis) => {
        const ticks = [];
        for (let v = Math.ceil(min / step) * step; v <= max; v += step) ticks.push({ value: v });
        axis.ticks = ticks;
      },
    };
  }

  function isolated(ctx) {
    const data = ctx.dataset.data;
    const y = (i) => (data[i] ? data[i].y : null);
    return y(ctx.dataIndex) != null && y(ctx.dataIndex - 1) == null && y(ctx.dataIndex + 1) == null;
  }

  /** A line chart over time from a `Series`; `scale` multiplies values (100 for shares → %). */
  function timeChart(id, series, yTitle, opts = {}) {
    const scale = opts.scale || 1;
    const names = Object.keys(series.series).filter((n) => !opts.only || opts.only.includes(n));
    const datasets = names.map((name) => {
      const color = opts.colors ? opts.colors[name] : colorFor(name);
      return {
        label: opts.labels ? opts.labels[name] || name : name,
        data: series.t.map((t, i) => {
          const v = series.series[name][i];
          return { x: t * 1000, y: v == null ? null : v * scale };
        }),
        borderColor: color,
        backgroundColor: color + (opts.stacked ? "88" : "33"),
        fill: opts.stacked ? (names.indexOf(name) === 0 ? "origin" : "-1") : false,
        // a point per bucket on plain lines; on areas only where a bucket stands alone
        // between empty ones, which no line or fill would show
        pointRadius: (ctx) => (isolated(ctx) ? 3 : opts.stacked ? 0 : 2),
        pointHitRadius: 6,
        borderWidth: 1.6,
        cubicInterpolationMode: "monotone",
        spanGaps: false,
      };
    });
    return upsert(id, {
      type: "line",
      data: { datasets },
      options: {
        interaction: { mode: "nearest", axis: "x", intersect: false },
        scales: {
          x: timeAxis(series),
          y: {
            stacked: Boolean(opts.stacked), beginAtZero: true, max: opts.max,
            title: { display: true, text: yTitle },
            ticks: { callback: opts.tick || ((v) => v) },
          },
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: { callbacks: { title: (items) => clock(items[0].parsed.x),
                                  label: (c) => `${c.dataset.label}: ${opts.fmt ? opts.fmt(c.parsed.y) : num(c.parsed.y, 2)}` } },
        },
      },
    });
  }

  function barChart(id, labels, datasets, yTitle, opts = {}) {
    return upsert(id, {
      type: "bar",
      data: { labels, datasets },
      options: {
        indexAxis: opts.horizontal ? "y" : "x",
        scales: {
          [opts.horizontal ? "x" : "y"]: {
            beginAtZero: true, max: opts.max, title: { display: true, text: yTitle },
            ticks: { callback: opts.tick || ((v) => v), maxRotation: 0, maxTicksLimit: 6 },
          },
          [opts.horizontal ? "y" : "x"]: { title: { display: Boolean(opts.catTitle), text: opts.catTitle } },
        },
        plugins: {
          legend: { display: datasets.length > 1, position: "bottom" },
          tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${opts.fmt ? opts.fmt(c.raw) : c.raw}` } },
        },
      },
    });
  }

  // ---- sections -----------------------------------------------------------------------------
  function renderSummary(s) {
    const set = (k, text) => { document.querySelector(`[data-kpi="${k}"]`).textContent = text; };
    const sub = (k, text) => { document.querySelector(`[data-kpi-sub="${k}"]`).textContent = text; };
    set("requests_per_min", num(s.requests_per_min, 2));
    sub("requests", `${s.requests} in window`);
    set("error_rate", pct(s.error_rate));
    sub("fallback_rate", `fallback ${pct(s.fallback_rate)}`);
    set("usd_per_hour", `${usd(s.usd_per_hour)}/h`);
    sub("cost_usd", `${usd(s.cost_usd)} total`);
    set("usd_per_request", usd(s.usd_per_request == null ? null : 1000 * s.usd_per_request));
    set("latency", `${ms(s.latency_p50_ms)} / ${ms(s.latency_p95_ms)}`);
    sub("ttft_p50_ms", `first token p50 ${ms(s.ttft_p50_ms)}`);
    set("cache_hit_rate", pct(s.cache_hit_rate));
    set("feedback_mean", s.feedback_mean == null ? "–" : num(s.feedback_mean, 2));
    sub("feedback_count", `${s.feedback_count} scores`);
    set("experts", `${s.experts_up} / ${s.experts_total}`);
  }

  function renderTraffic(t) {
    timeChart("chart-traffic-expert", t.by_expert, "requests / min", { stacked: true });
    timeChart("chart-traffic-model", t.by_model, "requests / min");
    timeChart("chart-traffic-rates", t.rates, "% of requests", {
      scale: 100, tick: (v) => `${v}%`, fmt: (v) => `${num(v)} %`,
      labels: { error_rate: "errors", fallback_rate: "fallbacks" },
      colors: { error_rate: "#ff6b6b", fallback_rate: "#ffb454" },
    });
  }

  function renderCost(c) {
    timeChart("chart-cost-hour", c.usd_per_hour, "USD / hour", { stacked: true, fmt: usd, tick: usd });
    const experts = c.by_expert.filter((e) => e.usd_per_request != null);
    barChart("chart-cost-expert", experts.map((e) => e.expert), [{
      label: "USD / request", data: experts.map((e) => e.usd_per_request),
      backgroundColor: experts.map((e) => colorFor(e.expert)),
    }], "USD / request", { fmt: usd, tick: usd });
    const keys = c.by_key;
    const label = (k) => {
      const who = k.name || k.key_id;
      if (k.budget_used_share == null) return who;
      const per = k.budget_period ? `/${k.budget_period}` : "";
      return `${who} (${pct(k.budget_used_share)} of ${usd(k.budget_usd)}${per})`;
    };
    barChart("chart-cost-key", keys.map(label), [{
      label: "USD in window", data: keys.map((k) => k.cost_usd), backgroundColor: "#5aa9ff",
    }], "USD", { horizontal: true, fmt: usd, tick: usd });
    $("#budget-note").textContent = `Budgets: ${c.budgets}.`;
  }

  function renderLatency(l) {
    const e = l.by_expert;
    const colors = ["#5aa9ff", "#1f5fa8", "#3ecf8e", "#1d7a52"];
    const fields = [["p50_ms", "total p50"], ["p95_ms", "total p95"],
                    ["ttft_p50_ms", "first token p50"], ["ttft_p95_ms", "first token p95"]];
    barChart("chart-latency-expert", e.map((x) => x.expert), fields.map(([f, name], i) => ({
      label: name, data: e.map((x) => x[f]), backgroundColor: colors[i],
    })), "ms", { fmt: ms });
    timeChart("chart-latency-time", l.over_time, "ms", {
      labels: { p50_ms: "p50", p95_ms: "p95" }, fmt: ms,
      colors: { p50_ms: "#5aa9ff", p95_ms: "#ffb454" },
    });
  }

  function renderRouting(r) {
    timeChart("chart-routing-share", r.share, "% of answered", {
      stacked: true, scale: 100, max: 100, tick: (v) => `${v}%`, fmt: (v) => `${num(v)} %`,
    });
    timeChart("chart-routing-cache", r.cache_hit_rate, "% of requests", {
      scale: 100, max: 100, tick: (v) => `${v}%`, fmt: (v) => `${num(v)} %`,
      labels: { cache_hit_rate: "cache hits" }, colors: { cache_hit_rate: "#3ecf8e" },
    });
    barChart("chart-routing-load", r.load.map((x) => x.expert), [
      { label: "waiting (queue depth)", data: r.load.map((x) => x.waiting), backgroundColor: "#ffb454" },
      { label: "in flight", data: r.load.map((x) => x.in_flight), backgroundColor: "#5aa9ff" },
      { label: "max concurrency", data: r.load.map((x) => x.max_concurrency), backgroundColor: "#394150" },
    ], "calls", { tick: (v) => (Number.isInteger(v) ? v : "") });
    const chips = $("#residency");
    chips.replaceChildren(...r.load.map((x) => {
      const chip = document.createElement("span");
      const resident = x.resident == null ? "residency unknown" : x.resident ? "resident" : "not loaded";
      chip.className = `chip ${x.up ? "up" : "down"}`;
      chip.textContent = `${x.expert}: ${x.up ? "up" : "down"} · ${resident}`;
      chip.title = x.last_error || "";
      chip.dataset.expert = x.expert;
      return chip;
    }));
  }

  function renderQuality(q) {
    const s = q.over_time;
    const mean = s.series.mean_score || [];
    const count = s.series.count || [];
    upsert("chart-quality-time", {
      type: "bar",
      data: {
        datasets: [
          { type: "line", label: "mean score", yAxisID: "y", borderColor: "#3ecf8e",
            backgroundColor: "#3ecf8e", pointRadius: 3, spanGaps: true,
            data: s.t.map((t, i) => ({ x: t * 1000, y: mean[i] })) },
          { type: "bar", label: "feedback count", yAxisID: "y2", backgroundColor: "#5aa9ff55",
            data: s.t.map((t, i) => ({ x: t * 1000, y: count[i] })) },
        ],
      },
      options: {
        scales: {
          x: timeAxis(s),
          y: { min: 0, max: 1, title: { display: true, text: "mean score (0–1)" } },
          y2: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false },
                title: { display: true, text: "feedback / bucket" },
                ticks: { callback: (v) => (Number.isInteger(v) ? v : "") } },
        },
        plugins: { legend: { position: "bottom" },
                   tooltip: { callbacks: { title: (items) => clock(items[0].parsed.x) } } },
      },
    });
    const names = Object.keys(q.by_expert);
    barChart("chart-quality-expert", names, [{
      label: "mean score", data: names.map((n) => q.by_expert[n]),
      backgroundColor: names.map((n) => colorFor(n)),
    }], "mean score (0–1)", { max: 1, fmt: (v) => num(v, 3) });
  }

  // ---- offline evaluation -------------------------------------------------------------------
  function renderEvaluations(ev) {
    $("#reports-dir").textContent = ev.reports_dir ? `from ${ev.reports_dir}` : "(set COE_REPORTS_DIR)";
    const select = $("#report");
    const ids = ev.reports.map((r) => r.id);
    if (select.dataset.ids !== JSON.stringify(ids)) {
      const keep = select.value;
      select.replaceChildren(...ev.reports.map((r) => new Option(`${r.id} · ${r.dataset}`, r.id)));
      select.dataset.ids = JSON.stringify(ids);
      if (ids.includes(keep)) select.value = keep;
    }
    const errors = $("#report-errors");
    errors.replaceChildren(...ev.errors.map((e) => {
      const li = document.createElement("li");
      li.textContent = `${e.id}: ${e.error}`;
      return li;
    }));
    const report = ev.reports.find((r) => r.id === select.value) || ev.reports[0];
    state.report = report || null;
    if (!report) {
      $("#report-note").textContent = ev.reports_dir ? "No report.json found yet: run `coe eval --out` into it."
        : "Set COE_REPORTS_DIR to a folder of `coe eval` reports.";
      upsert("chart-eval-curves", { type: "scatter", data: { datasets: [] }, options: {} });
      $("#eval-table thead").replaceChildren();
      $("#eval-table tbody").replaceChildren();
      $("#singles-table tbody").replaceChildren();
      return;
    }
    renderCurves(report);
    renderTable(report);
  }

  function renderCurves(report) {
    const datasets = [];
    for (const r of report.routers) {
      const point = (p) => ({ x: p.cost_usd, y: p.accuracy, w: p.cost_weight });
      if (r.reference === "best_single") {
        datasets.push({ label: `★ best single (${report.best_single})`, data: [point(r.curve[0])],
          pointStyle: "star", pointRadius: 11, borderColor: "#ffd479", backgroundColor: "#ffd479",
          borderWidth: 2, showLine: false });
      } else {
        const oracle = r.reference === "oracle";
        const color = oracle ? "#e6e9ee" : colorFor(`router:${r.name}`);
        datasets.push({ label: oracle ? "◆ oracle" : r.name, data: r.curve.map(point),
          borderColor: color, backgroundColor: oracle ? "transparent" : color, showLine: true,
          pointRadius: oracle ? 4 : 2, borderDash: oracle ? [5, 4] : [], borderWidth: oracle ? 1.2 : 1.8,
          pointStyle: oracle ? "rectRot" : "circle", order: oracle ? 0 : 1 });
      }
    }
    datasets.push({ label: "single models", data: report.singles.map((s) => ({ x: s.mean_cost_usd,
      y: s.accuracy, model: s.model })), pointStyle: "triangle", pointRadius: 5,
      borderColor: "#8b95a3", backgroundColor: "#8b95a3", showLine: false });
    const positive = datasets.every((ds) => ds.data.every((p) => p.x > 0));
    upsert("chart-eval-curves", {
      type: "scatter",
      data: { datasets },
      options: {
        scales: {
          x: { type: positive ? "logarithmic" : "linear",
               title: { display: true, text: `mean cost per query (USD${positive ? ", log scale" : ""})` },
               ticks: { callback: positive ? logTick : usd, maxRotation: 0, autoSkip: false } },
          y: { title: { display: true, text: "accuracy" }, suggestedMin: 0, suggestedMax: 1 },
        },
        plugins: {
          legend: { position: "right" },
          tooltip: { callbacks: { label: (c) => {
            const p = c.raw;
            const who = p.model ? p.model : c.dataset.label;
            return `${who}: accuracy ${p.y.toFixed(3)} at ${usd(p.x)}/query` + (p.w != null ? ` (cost weight ${p.w.toPrecision(3)})` : "");
          } } },
        },
      },
    });
    $("#report-note").textContent = `${report.dataset}: ${report.n_train} train / ${report.n_test} test queries; `
      + `costs ${report.costs_estimated ? "ESTIMATED (" + report.cost_note + ")" : "measured"}. `
      + "Pick a cost weight where a router's curve bends: hover a point to read it.";
  }

  function renderTable(report) {
    const head = document.createElement("tr");
    head.replaceChildren(...["router", ...METRICS.map(([, label]) => label)].map((text) => {
      const th = document.createElement("th");
      th.textContent = text;
      return th;
    }));
    $("#eval-table thead").replaceChildren(head);
    const routers = report.routers.filter((r) => r.kind === "router");
    const best = {};
    for (const [k] of METRICS) {
      const values = routers.map((r) => r.metrics[k]).filter((v) => v != null);
      if (values.length) best[k] = LOWER_IS_BETTER.has(k) ? Math.min(...values) : Math.max(...values);
    }
    const rows = report.routers.map((r) => {
      const tr = document.createElement("tr");
      tr.dataset.router = r.name;
      if (r.reference) tr.className = "reference";
      const mark = r.reference === "best_single" ? "★ " : r.reference === "oracle" ? "◆ " : "";
      const name = document.createElement("td");
      name.textContent = mark + r.name + (r.reference === "best_single" ? ` (${report.best_single})` : "");
      tr.append(name);
      for (const [k] of METRICS) {
        const td = document.createElement("td");
        const v = r.metrics[k];
        td.textContent = v == null ? "never" : Number(v).toFixed(3);
        if (r.kind === "router" && v != null && v === best[k]) td.className = "best";
        tr.append(td);
      }
      return tr;
    });
    $("#eval-table tbody").replaceChildren(...rows);
    const singles = [...report.singles].sort((a, b) => a.mean_cost_usd - b.mean_cost_usd);
    $("#singles-table tbody").replaceChildren(...singles.map((s) => {
      const tr = document.createElement("tr");
      tr.dataset.model = s.model;
      if (s.best) tr.className = "reference";
      for (const text of [(s.best ? "★ " : "") + s.model, s.accuracy.toFixed(3), usd(s.mean_cost_usd)]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    }));
  }

  // ---- the loop -----------------------------------------------------------------------------
  const SECTIONS = [
    ["summary", true, renderSummary], ["traffic", true, renderTraffic], ["cost", true, renderCost],
    ["latency", true, renderLatency], ["routing", true, renderRouting],
    ["quality", true, renderQuality], ["evaluations", false, renderEvaluations],
  ];
  let timer = null;

  async function refresh() {
    clearTimeout(timer);
    const status = $("#status");
    try {
      const bodies = await Promise.all(SECTIONS.map(([name, windowed]) =>
        getJSON(windowed ? `/${name}?window=${state.window}` : `/${name}`)));
      SECTIONS.forEach(([name, , render], i) => {
        state.data[name] = bodies[i];
        render(bodies[i]);
      });
      state.updates += 1;
      state.lastError = null;
      document.body.dataset.updates = String(state.updates);
      status.className = "status";
      status.textContent = `updated ${new Date().toTimeString().slice(0, 8)}`;
    } catch (err) {
      state.lastError = String(err && err.stack ? err.stack : err);
      status.className = "status error";
      if (err instanceof AuthNeeded) {
        status.textContent = "admin key required";
        $("#keyform").hidden = false;
      } else {
        status.textContent = `update failed: ${err.message || err}`;
      }
    } finally {
      timer = setTimeout(refresh, state.refreshMs);
    }
  }

  async function start() {
    const w = new URLSearchParams(location.search).get("window");
    if ([...$("#window").options].some((o) => o.value === w)) $("#window").value = w;
    state.window = $("#window").value;
    $("#window").addEventListener("change", (e) => { state.window = e.target.value; refresh(); });
    $("#report").addEventListener("change", () => renderEvaluations(state.data.evaluations));
    $("#keyform").addEventListener("submit", (e) => {
      e.preventDefault();
      localStorage.setItem(KEY_STORE, $("#key").value);
      // the gateway's admin check also reads this cookie, so a figure opened in a tab works too
      document.cookie = `coe_key=${encodeURIComponent($("#key").value)}; path=/; SameSite=Strict`;
      $("#keyform").hidden = true;
      refresh();
    });
    try {
      const config = await getJSON("/config");
      state.refreshMs = 1000 * config.refresh_s;
    } catch (err) {
      if (err instanceof AuthNeeded) $("#keyform").hidden = false;
    }
    refresh();
  }

  start();
})();
