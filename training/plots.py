"""PNG plots for `coe eval` (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_curves", "plot_per_task"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(report: dict[str, Any], path: Path) -> Path:
    """Cost-quality curve of every router under the λ sweep, best single and oracle marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, entry in report["routers"].items():
        curve = sorted((c, a) for c, a, *_ in entry["curve"])
        if name == "best_single":
            continue
        style = "--" if name == "oracle" else "-"
        ax.plot([c for c, _ in curve], [a for _, a in curve], style, marker=".", label=name)
    for model, single in report["singles"].items():
        ax.scatter(single["mean_cost_usd"], single["accuracy"], color="grey", s=14)
        ax.annotate(model, (single["mean_cost_usd"], single["accuracy"]), fontsize=6, color="grey")
    best = report["singles"][report["best_single"]]
    ax.scatter(
        best["mean_cost_usd"],
        best["accuracy"],
        color="black",
        marker="*",
        s=160,
        label=f"best single ({report['best_single']})",
        zorder=5,
    )
    ax.axhline(best["accuracy"], color="black", linewidth=0.5, linestyle=":")
    ax.axvline(best["mean_cost_usd"], color="black", linewidth=0.5, linestyle=":")
    estimated = " (estimated)" if report["dataset"]["costs_estimated"] else ""
    ax.set_xlabel(f"mean cost per query, USD{estimated}")
    ax.set_ylabel("accuracy (mean score)")
    ax.set_title(f"{report['dataset']['name']}: cost-quality curves over cost_weight")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_task(report: dict[str, Any], path: Path) -> Path:
    """Per-task accuracy of each router at its operating point, as grouped bars."""
    plt = _pyplot()
    names = list(report["routers"])
    tasks = sorted({t for e in report["routers"].values() for t in e["per_task"]})
    fig, ax = plt.subplots(figsize=(min(24, max(8, len(tasks) * 0.9)), 5))
    width = 0.8 / max(1, len(names))
    for i, name in enumerate(names):
        per_task = report["routers"][name]["per_task"]
        xs = [t + i * width for t in range(len(tasks))]
        ax.bar(xs, [per_task.get(t, 0.0) for t in tasks], width=width, label=name)
    ax.set_xticks([t + 0.4 - width / 2 for t in range(len(tasks))])
    ax.set_xticklabels(tasks, rotation=40, ha="right", fontsize=7)
    ax.set_ylabel("accuracy at the operating point (≤ best single's cost)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
