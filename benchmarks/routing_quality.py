"""Routing quality on real benchmark data: what `coe eval` reports, on LLMRouter and RouteLLM MMLU.

    .venv/bin/python benchmarks/routing_quality.py [--data ../shared/data] [--out reports/quality]

Imports both datasets into canonical files (LLMRouter: its own split minus the 119 test questions
that also occur in train; RouteLLM MMLU: contaminated prompts excluded, a seeded 70/30 query
split), trains every router family on the train side only, and prints one table per dataset plus
the issue's targets. Costs on both are ESTIMATED (list price × counted prompt tokens + 256 assumed
output tokens; see `training.loaders`). Embeddings are cached in `.cache/coe/embeddings`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.fitting import run_eval
from training.importing import import_dataset
from training.loaders import LoadOptions
from training.report import markdown_table

ROUTERS = ["knn", "classifier", "category", "mf", "skills", "ensemble", "random", "cheapest"]


def _targets(report: dict[str, object], name: str) -> str:
    routers = report["routers"]
    assert isinstance(routers, dict)
    lines = []
    for router, entry in routers.items():
        if entry["kind"] != "router":
            continue
        acc, share = entry["acc_at_best_single_cost"], entry["cost_share_to_match_best_single"]
        share95 = entry["cost_share_at_95pct_best_quality"]
        saved = "never" if share95 is None else f"{1 - share95:.0%}"
        lines.append(
            f"  {router:>10}: acc ≤ best-single cost {acc if acc is None else round(acc, 3)}"
            f" | cost to match best single {share if share is None else f'{share:.0%}'}"
            f" | cost saved at 95% of best quality {saved}"
        )
    return f"{name} targets:\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("reports/quality"))
    parser.add_argument("--routers", default=",".join(ROUTERS))
    args = parser.parse_args()
    names = args.routers.split(",")
    cases = [
        ("llmrouter", [args.data / "llmrouter"], 0.0),
        ("routellm", [args.data / "routellm" / "mmlu"], 0.3),
    ]
    for fmt, sources, test_fraction in cases:
        folder = args.out / f"{fmt}-data"
        import_dataset(fmt, sources, folder, LoadOptions(), test_fraction=test_fraction, seed=0)
        report, _ = run_eval(
            folder / "train.parquet",
            folder / "test.parquet",
            names,
            args.out / fmt,
            seed=0,
            cache_dir=Path(".cache/coe/embeddings"),
        )
        print(markdown_table(report))
        print(_targets(report, fmt))
        print()


if __name__ == "__main__":
    main()
