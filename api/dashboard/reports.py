"""Find the `coe eval` reports under the reports directory and shape them for the dashboard.

`coe eval --out DIR` writes `DIR/report.json` (schema in `training.evaluate`); every such file
under `COE_REPORTS_DIR` (at most `MAX_DEPTH` folders down) is one report. A file that cannot be
read is listed with its error instead of being skipped, so a broken report is seen, not missed.
Parsed reports are cached by path and modification time: the page polls, the files rarely change.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from api.dashboard.models import (
    CurvePoint,
    EvalReport,
    EvalReports,
    EvalRouter,
    EvalSingle,
    ReportError,
)

__all__ = ["MAX_DEPTH", "MAX_REPORTS", "load_reports"]

MAX_DEPTH = 4
MAX_REPORTS = 50
_REFERENCES = ("best_single", "oracle")


def _find(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, subdirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        if depth >= MAX_DEPTH:
            subdirs.clear()
        subdirs.sort()
        if "report.json" in files:
            found.append(Path(folder) / "report.json")
    return found


def _router(name: str, entry: dict[str, Any]) -> EvalRouter:
    metrics = {
        k: v
        for k, v in entry.items()
        if v is None or (isinstance(v, int | float) and not isinstance(v, bool))
    }
    points = (CurvePoint(cost_usd=c, accuracy=a, cost_weight=w) for c, a, w in entry["curve"])
    curve = sorted(points, key=lambda p: (p.cost_usd, p.accuracy))
    return EvalRouter(
        name=name,
        kind=entry["kind"],
        reference=name if entry["kind"] == "reference" and name in _REFERENCES else None,
        metrics=metrics,
        curve=curve,
    )


def _parse(path: Path, report_id: str) -> EvalReport:
    raw = json.loads(path.read_text())
    data, best = raw["dataset"], raw["best_single"]
    return EvalReport(
        id=report_id,
        modified=path.stat().st_mtime,
        dataset=data["name"],
        n_train=data["n_train"],
        n_test=data["n_test"],
        costs_estimated=data["costs_estimated"],
        cost_note=data.get("cost_note", ""),
        best_single=best,
        cost_scale_usd=raw["cost_scale_usd"],
        routers=[_router(name, entry) for name, entry in raw["routers"].items()],
        singles=[
            EvalSingle(
                model=m, accuracy=s["accuracy"], mean_cost_usd=s["mean_cost_usd"], best=m == best
            )
            for m, s in raw["singles"].items()
        ],
    )


@lru_cache(maxsize=MAX_REPORTS * 2)
def _cached(path: Path, report_id: str, mtime_ns: int) -> EvalReport | ReportError:
    try:
        return _parse(path, report_id)
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        # ValueError covers malformed JSON; KeyError/TypeError a file of another shape.
        what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        return ReportError(id=report_id, error=f"{type(exc).__name__}: {what}")


def load_reports(root: Path | None) -> EvalReports:
    """Every report under `root`, newest first (at most `MAX_REPORTS`), and those unreadable."""
    if root is None:
        return EvalReports(reports_dir=None, reports=[], errors=[])
    if not root.is_dir():
        error = ReportError(id=".", error=f"COE_REPORTS_DIR {root} is not a directory")
        return EvalReports(reports_dir=str(root), reports=[], errors=[error])
    reports: list[EvalReport] = []
    errors: list[ReportError] = []
    for path in _find(root):
        report_id = str(path.parent.relative_to(root)) if path.parent != root else "."
        try:
            mtime_ns = path.stat().st_mtime_ns
        except OSError as exc:
            errors.append(ReportError(id=report_id, error=f"{type(exc).__name__}: {exc}"))
            continue
        result = _cached(path, report_id, mtime_ns)
        (reports if isinstance(result, EvalReport) else errors).append(result)  # type: ignore[arg-type]
    reports.sort(key=lambda r: -r.modified)
    return EvalReports(reports_dir=str(root), reports=reports[:MAX_REPORTS], errors=errors)
