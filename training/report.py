"""Assemble, write and print the `coe eval` report (JSON, Markdown, PNG)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.data import RoutingData
from training.evaluate import RouterResult

__all__ = ["build_report", "markdown_table", "write_report"]

_COLUMNS = (
    ("calibrated.accuracy", "calibrated acc"),
    ("calibrated.cost_share", "calibrated cost share"),
    ("calibrated_match.cost_share", "calibrated cost share to match"),
    ("calibrated_match.accuracy", "its acc"),
    ("acc_at_best_single_cost", "acc ≤ best-single cost"),
    ("cost_share_to_match_best_single", "cost share to match best single"),
    ("cost_share_at_95pct_best_quality", "cost share at 95% quality"),
    ("apgr", "APGR"),
    ("cpt50", "CPT(50%)"),
    ("cpt80", "CPT(80%)"),
    ("aiq", "AIQ"),
    ("arena_score", "Arena S"),
)


def build_report(
    results: dict[str, RouterResult],
    test: RoutingData,
    dataset: dict[str, Any],
    cost_scale: float,
) -> dict[str, Any]:
    """The `report.json` object (schema in `training.evaluate`)."""
    acc, cost = test.scores.mean(axis=0), test.costs.mean(axis=0)
    best = int(np.lexsort((cost, -acc))[0])
    weak = int(np.lexsort((-acc, cost))[0])
    return {
        "dataset": dataset,
        "routers": {name: {"kind": r.kind, **r.metrics} for name, r in results.items()},
        "singles": {
            m: {"accuracy": float(acc[j]), "mean_cost_usd": float(cost[j])}
            for j, m in enumerate(test.models)
        },
        "best_single": test.models[best],
        "weak_single": test.models[weak],
        "cost_scale_usd": cost_scale,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "never"
    if isinstance(value, float) and 0 < abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _cell(entry: dict[str, Any], key: str) -> str:
    """A table cell: `key` or `outer.inner` (a reference has no `calibrated` entry: "–")."""
    outer, _, inner = key.partition(".")
    if outer not in entry:
        return "–"
    value = entry[outer]
    if inner:
        value = None if value is None else value.get(inner)
    return _fmt(value)


def markdown_table(report: dict[str, Any], names: Sequence[str] | None = None) -> str:
    """The headline metrics as a Markdown table, one row per router."""
    names = list(names or report["routers"])
    head = "| router | " + " | ".join(label for _, label in _COLUMNS) + " |"
    rule = "|---" * (len(_COLUMNS) + 1) + "|"
    rows = [
        f"| {n} | " + " | ".join(_cell(report["routers"][n], k) for k, _ in _COLUMNS) + " |"
        for n in names
    ]
    ds = report["dataset"]
    best = report["singles"][report["best_single"]]
    note = (
        f"{ds['name']}: {ds['n_train']} train / {ds['n_test']} test queries, "
        f"{len(ds['models'])} models; best single {report['best_single']} "
        f"(accuracy {best['accuracy']:.3f}, {best['mean_cost_usd']:.3g} USD/query). "
        + (
            f"Costs are ESTIMATED: {ds['cost_note']}"
            if ds["costs_estimated"]
            else "Costs measured."
        )
    )
    return "\n".join([note, "", head, rule, *rows, ""])


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write report.json, report.md, curves.png and per_task.png into `out_dir`."""
    from training.plots import plot_curves, plot_per_task

    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    json_path.write_text(json.dumps(report, indent=2))
    md_path = out_dir / "report.md"
    md_path.write_text(markdown_table(report))
    return [
        json_path,
        md_path,
        plot_curves(report, out_dir / "curves.png"),
        plot_per_task(report, out_dir / "per_task.png"),
    ]
