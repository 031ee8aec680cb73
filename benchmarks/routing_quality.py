"""Routing quality on real benchmark data: what `coe eval` reports, per dataset, as tables.

    .venv/bin/python benchmarks/routing_quality.py [--data ../shared/data] [--out reports/quality]
        [--cases llmrouter,mmlu-pro,math-l5] [--seeds 0,1,2] [--routers cluster,knn,...]
        [--embed-cache /work/cache/embeddings] [--lomo MODEL,MODEL,MODEL]
        [--calibrations cv | split | split,cv]

Each case is imported into canonical files (`coe data import`), every router family is trained on
the training side only, and `coe eval`'s figures are printed: AIQ, the calibrated operating point
(λ chosen on a validation split of the training file for "cost ≤ the best single model's",
applied once to the test file), the calibrated cost to match the best single model, and the
curve-optimal figures beside them. Where the split is random (every case but LLMRouter, whose
split is published) each figure is the mean ± sd over `--seeds`.

`--lomo` adds the onboarding table on MMLU-Pro (seed 0): for each named model, the AIQ of a
`cluster` router trained with all models, trained without it, and trained without it and then
given it from 100 profiled training queries (`coe train --base --add`; mean ± sd over 3 draws of
those queries; `--lomo-compare` adds columns for other onboarding parameters).

Costs are ESTIMATED everywhere (list price × counted tokens; see `training.loaders`).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.calibrate import DEFAULT_CALIBRATION
from training.dataset import read_dataset, to_routing_data
from training.embed import embed_prompts, lexical_embeddings
from training.fitting import run_eval
from training.importing import import_dataset
from training.loaders import LoadOptions
from training.onboarding import lomo

ROUTERS = [
    "auto",
    "cluster",
    "knn",
    "irt",
    "classifier",
    "category",
    "mf",
    "skills",
    "ensemble",
    "stack",
    "random",
]

#: case → (format, source under --data, test fraction (0: the source's own split), prices?)
CASES: dict[str, tuple[str, str, float, bool]] = {
    "llmrouter": ("llmrouter", "llmrouter", 0.0, False),
    "mmlu-pro": ("mmlu-pro", "multimodel/mmlu_pro", 0.3, True),
    "math-l5": ("zeroeval", "multimodel/zeroeval/math-l5", 0.3, True),
    "gsm": ("zeroeval", "multimodel/zeroeval/gsm", 0.3, True),
    "routellm": ("routellm", "routellm/mmlu", 0.3, False),
}

#: case → folder name under `--imported` (seed N > 0 adds "-seedN" or "-sN")
IMPORTED = {
    "llmrouter": "llmrouter",
    "mmlu-pro": "mmlu_pro",
    "math-l5": "zeroeval-math",
    "gsm": "zeroeval-gsm",
}

#: (label, path into a router's report entry)
FIGURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AIQ", ("aiq",)),
    ("calibrated acc", ("calibrated", "accuracy")),
    ("calibrated cost share", ("calibrated", "cost_share")),
    ("calibrated share to match", ("calibrated_match", "cost_share")),
    ("its acc", ("calibrated_match", "accuracy")),
    ("curve acc ≤ best cost", ("acc_at_best_single_cost",)),
    ("curve share to match", ("cost_share_to_match_best_single",)),
)


def _get(entry: dict[str, Any], path: Sequence[str]) -> float | None:
    value: Any = entry
    for key in path:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return float(value)


def _cell(values: Sequence[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "never"
    text = f"{statistics.fmean(got):.3f}"
    if len(values) > 1:
        text += f" ± {statistics.stdev(got):.3f}" if len(got) > 1 else ""
        text += "" if len(got) == len(values) else f" ({len(values) - len(got)}× never)"
    return text


def table(reports: Sequence[dict[str, Any]]) -> str:
    """One Markdown row per router, mean ± sd over the reports (one per seed)."""
    head = "| router | " + " | ".join(label for label, _ in FIGURES) + " |"
    lines = [head, "|---" * (len(FIGURES) + 1) + "|"]
    for name in reports[0]["routers"]:
        cells = [_cell([_get(r["routers"][name], path) for r in reports]) for _, path in FIGURES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    first = reports[0]
    singles = first["singles"]
    best = first["best_single"]
    lines.append("")
    lines.append(
        f"{first['dataset']['n_train']} train / {first['dataset']['n_test']} test queries, "
        f"{len(singles)} models, {len(reports)} seed(s); best single {best} "
        f"(acc {_cell([r['singles'][r['best_single']]['accuracy'] for r in reports])}); "
        "costs ESTIMATED"
    )
    return "\n".join(lines)


def _folder(args: argparse.Namespace, case: str, seed: int) -> Path:
    """Where the canonical files of `case` at `seed` are (or will be imported to)."""
    if args.imported is not None and case in IMPORTED:
        for suffix in (f"-seed{seed}", f"-s{seed}") if seed else ("",):
            done = args.imported / (IMPORTED[case] + suffix)
            if (done / "test.parquet").is_file():
                return done
    return Path(args.out / f"{case}-data-seed{seed}")


def run_case(
    case: str,
    args: argparse.Namespace,
    names: list[str],
    seeds: Sequence[int],
    calibration: str = DEFAULT_CALIBRATION,
) -> list[dict[str, Any]]:
    fmt, source, fraction, priced = CASES[case]
    opts = LoadOptions(**({"prices": args.data / "multimodel" / "prices.json"} if priced else {}))
    reports = []
    for seed in seeds if fraction > 0 else seeds[:1]:
        folder = _folder(args, case, seed)
        if not (folder / "test.parquet").is_file():
            import_dataset(fmt, [args.data / source], folder, opts, fraction, seed)
        report, _ = run_eval(
            folder / "train.parquet",
            folder / "test.parquet",
            names,
            args.out / f"{case}-seed{seed}" / calibration,
            seed=seed,
            cache_dir=args.embed_cache,
            calibration=calibration,
        )
        reports.append(report)
    return reports


#: (label, path) of the calibrated figures `compare_table` sets side by side
CALIBRATED = FIGURES[1:5]


def compare_table(by_method: dict[str, Sequence[dict[str, Any]]]) -> str:
    """The calibrated figures of each router under each calibration method, side by side."""
    methods = list(by_method)
    head = "| router | " + " | ".join(f"{label} ({m})" for label, _ in CALIBRATED for m in methods)
    lines = [head + " |", "|---" * (len(CALIBRATED) * len(methods) + 1) + "|"]
    first = by_method[methods[0]]
    for name in first[0]["routers"]:
        if first[0]["routers"][name].get("kind") == "reference":
            continue
        cells = [
            _cell([_get(r["routers"][name], path) for r in by_method[m]])
            for _, path in CALIBRATED
            for m in methods
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lomo_table(args: argparse.Namespace, held_out: Sequence[str], n_profile: int = 100) -> str:
    """Leave-one-model-out onboarding on MMLU-Pro seed 0 (see the module docstring): AIQ mean ±
    sd over 3 profile draws (`training.onboarding.lomo`)."""
    folder = _folder(args, "mmlu-pro", 0)
    if not (folder / "test.parquet").is_file():
        run_case("mmlu-pro", args, ["random"], [0])
    train = to_routing_data(read_dataset(folder / "train.parquet"))
    test = to_routing_data(read_dataset(folder / "test.parquet"), models=train.models)
    if args.lomo_embed == "lexical":
        x_train, x_test = lexical_embeddings(train.prompts, test.prompts)
    else:
        x_train = embed_prompts(train.prompts, cache_dir=args.embed_cache, show_progress=False)
        x_test = embed_prompts(test.prompts, cache_dir=args.embed_cache, show_progress=False)
    configs = [{}, *args.lomo_compare]  # the defaults first, then any onboarding to compare
    labels = ["default", *(json.dumps(c) for c in args.lomo_compare)]
    lines = [
        "| held-out model | AIQ full | "
        + " | ".join(f"AIQ added from {n_profile} ({label})" for label in labels)
        + " | AIQ left out | gap to full (default) | its share: full / added |",
        "|---" * (len(configs) + 5) + "|",
    ]
    rows = lomo(train, x_train, test, x_test, held_out, configs, n_profile=n_profile)
    for row in rows:
        lines.append(
            f"| {row.model} | {row.full:.4f} | "
            + " | ".join(_cell(added) for added in row.added)
            + f" | {row.left_out:.4f} | {statistics.fmean(row.added[0]) - row.full:+.4f} "
            f"| {row.share_full:.1%} / " + " / ".join(f"{s:.1%}" for s in row.share_added) + " |"
        )
    idle = [r.model for r in rows if r.share_full < 0.01]
    cost = max((r.full - r.left_out for r in rows if r.share_full < 0.01), default=0.0)
    lines.append(
        f"\n{len(idle)} of {len(rows)} get < 1% of the queries with full retraining (leaving "
        f"them out costs ≤ {cost:.4f} AIQ): {', '.join(idle) or 'none'}"
    )
    for c, label in enumerate(labels):
        met = [r.model for r in rows if _meets(r, c)]
        lines.append(
            f"target (gap to full ≥ −0.01, ≥ {_BETTER} above left out) met, {label}: {len(met)} of "
            f"{len(rows)}: {', '.join(met) or 'none'}"
        )
    return "\n".join(lines)


def _meets(row: Any, config: int) -> bool:
    """The issue's onboarding target for one held-out model: the mean AIQ added from the
    profile within 0.01 of full retraining and above leaving the model out, by at least
    `_BETTER` (a model that gets no queries either way ties up to rounding, and is not
    counted)."""
    added = statistics.fmean(row.added[config])
    return added - row.full >= -0.01 and added - row.left_out >= _BETTER


#: how much better than leaving a model out onboarding must be to count
_BETTER = 0.001


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("reports/quality"))
    parser.add_argument("--cases", default="llmrouter,mmlu-pro,math-l5")
    parser.add_argument("--routers", default=",".join(ROUTERS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--embed-cache", type=Path, default=Path(".cache/coe/embeddings"))
    parser.add_argument(
        "--imported", type=Path, help="Folder of already imported cases (e.g. /work/data-out)"
    )
    parser.add_argument("--lomo", default="", help="MMLU-Pro models to onboard (comma-separated)")
    parser.add_argument(
        "--lomo-compare",
        type=json.loads,
        default=[],
        help='JSON list of onboarding params to compare, e.g. \'[{"onboard": "regression"}]\'',
    )
    parser.add_argument(
        "--lomo-embed",
        choices=("minilm", "lexical"),
        default="minilm",
        help="lexical: TF-IDF + SVD(64) fitted on the training prompts, a stand-in for MiniLM",
    )
    parser.add_argument(
        "--calibrations",
        default=DEFAULT_CALIBRATION,
        help="comma-separated `coe eval --calibration` methods (split,cv: both, side by side)",
    )
    args = parser.parse_args()
    names = args.routers.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = [m for m in args.calibrations.split(",") if m]
    for case in [c for c in args.cases.split(",") if c]:
        by_method = {m: run_case(case, args, names, seeds, m) for m in methods}
        for m, reports in by_method.items():
            print(f"## {case} (calibration: {m})\n\n{table(reports)}\n", flush=True)
        if len(methods) > 1:
            print(f"## {case}: calibrated points by method\n\n{compare_table(by_method)}\n")
    if args.lomo:
        print(f"## onboarding, MMLU-Pro seed 0\n\n{lomo_table(args, args.lomo.split(','))}")


if __name__ == "__main__":
    main()
