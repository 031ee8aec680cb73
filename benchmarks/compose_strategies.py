"""Composition and cascades against routers and the best single model, offline, on recorded replies.

    .venv/bin/python benchmarks/compose_strategies.py --data DIR --out reports/compose-NAME \
        [--routers ensemble,vote,cascade,chain,rl] [--embed-cache /work/cache/embeddings] [--reuse]
    .venv/bin/python benchmarks/compose_strategies.py --data DIR --out R --routers chain --no-embed

`DIR` holds `train.parquet` and `test.parquet` with every model's `response` (`coe data import`
of ZeroEval, MMLU-Pro or RouteLLM GSM8K). This runs `coe eval` on them (or, with `--reuse`,
reads the report already in `--out`) and prints:

1. per router / strategy: AIQ, the best accuracy at ≤ 30% and ≤ 100% of the best single
   model's cost (curve-optimal: every point is a test-set operating point), the cost share to
   match it, the *calibrated* point (chosen on a validation split of the training file), calls
   per query there and how often a cascade escalates;
2. a vote of k: its cost and accuracy against the best single model, per k (λ = 0: the k
   best-profiled experts);
3. where composition loses: at the calibrated point, the share of queries a strategy gets right
   where the best single model is wrong (won) and the reverse (lost);
4. the agreement chain (`chain`), per cost budget: the chain chosen on the training file, its
   train-CV accuracy and cost share beside the test's, calls per query, how often it
   escalates past its first k members (k = 2: past the agreeing pair), and with
   `--params '{"chain": {"regions": true}}'` whether a partition won the budget on train-CV;
5. the chain's operating points: `calibrated` and `calibrated_match` chosen as every entry's
   (`--calibration cv`: on the pooled out-of-fold curve of 5 chains, each fitted on 4 folds of
   the training file), `calibrated_folds` and `calibrated_match_folds` chosen on the chain's
   own fitting folds (what `--calibration split` keeps for a chain), `calibrated_safe` (held-out
   cost ≤ 1.0× on every fitting fold).

`--no-embed` runs strategies that read no query embedding (`chain`) without embedding the
prompts at all (the routers' and the other strategies' embeddings are not computed, so only
such names are accepted): minutes of CPU saved on a set whose embeddings are not cached.

Costs are whatever the data records (ESTIMATED for these sources: tokens × list prices).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from training.calibrate import CALIBRATIONS, DEFAULT_CALIBRATION

SHARES = (0.3, 1.0)


def _best_at(curve: list[list[float]], cost: float) -> float | None:
    reach = [row[1] for row in curve if row[0] <= cost * (1 + 1e-9)]
    return max(reach) if reach else None


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def headline(report: dict[str, Any], names: list[str]) -> list[str]:
    best = report["singles"][report["best_single"]]
    cost = best["mean_cost_usd"]
    lines = [
        "| entry | AIQ | acc ≤30% cost | acc ≤ its cost | share to match | calibrated acc "
        "| calibrated share | calls/q (calibrated) | escalated (calibrated) |",
        "|---" * 9 + "|",
    ]
    for name in names:
        entry = report["routers"].get(name)
        if entry is None:
            continue
        cal = entry.get("calibrated") or {}
        cells = [
            _fmt(entry["aiq"]),
            *(_fmt(_best_at(entry["curve"], s * cost)) for s in SHARES),
            _fmt(entry["cost_share_to_match_best_single"]),
            _fmt(cal.get("accuracy")),
            _fmt(cal.get("cost_share")),
            _fmt(cal.get("calls_per_query"), 2),
            _fmt(cal.get("escalated"), 2),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def vote_by_k(report: dict[str, Any]) -> list[str]:
    entry = report["routers"].get("vote")
    if entry is None or "sweep" not in entry:
        return []
    best = report["singles"][report["best_single"]]
    lines = ["| k | accuracy | gain vs best single | cost share | calls/q |", "|---" * 5 + "|"]
    for run in entry["sweep"]:
        if run["params"].get("lambda", 0.0) != 0.0:
            continue
        gain = run["accuracy"] - best["accuracy"]
        share = run["cost_usd"] / best["mean_cost_usd"]
        lines.append(
            f"| {int(run['params']['k'])} | {run['accuracy']:.3f} | {gain:+.3f} | {share:.2f} "
            f"| {run['calls_per_query']:.2f} |"
        )
    return lines


def chain_points(report: dict[str, Any]) -> list[str]:
    entry = report["routers"].get("chain")
    if entry is None:
        return []
    lines = [
        "| chain point (chosen on train) | budget | acc | cost share | calls/q | aim met on train "
        "| won | lost |",
        "|---" * 8 + "|",
    ]
    labels = ("calibrated", "calibrated_match", "calibrated_folds", "calibrated_match_folds")
    for label in (*labels, "calibrated_safe"):
        p = entry.get(label)
        if p:
            lines.append(
                f"| {label} | {p['params'].get('share', 0.0):.2f} | {p['accuracy']:.3f} "
                f"| {_fmt(p['cost_share'])} | {p['calls_per_query']:.2f} "
                f"| {p['met_on_validation']} | {p['won']:.3f} | {p['lost']:.3f} |"
            )
    return lines


def _chain_name(r: dict[str, Any]) -> str:
    """`a → b → c (k=2)`, the trusted member marked `*` (its reply alone answers)."""
    names = [f"{e}*" if i == r.get("trust_from") else e for i, e in enumerate(r["experts"])]
    return f"{' → '.join(names)} (k={r['k']})"


def chain_table(report: dict[str, Any]) -> list[str]:
    entry = report["routers"].get("chain")
    if entry is None or "cv" not in entry:
        return []
    best = report["singles"][report["best_single"]]["mean_cost_usd"]
    lines = [
        "| budget | family | chain (k; * trusted) | train-CV acc | train-CV share | test acc "
        "| test share | calls/q | escalated past k | regions (train-CV) |",
        "|---" * 10 + "|",
    ]
    for r in entry["cv"]:
        share = r["test_cost_usd"] / best if best > 0 else float("nan")
        lines.append(
            f"| {r['share']:.2f} | {r.get('family', '')} | {_chain_name(r)} "
            f"| {r['cv_accuracy']:.3f} "
            f"| {r['cv_cost_share']:.2f} | {r['test_accuracy']:.3f} | {share:.2f} "
            f"| {r['calls_per_query']:.2f} | {r['escalated']:.2f} | {_regions(r)} |"
        )
    return lines


def _regions(r: dict[str, Any]) -> str:
    """Where a partition won the budget: its name, κ and the global chain's train-CV accuracy
    it beat; else the best partition's train-CV accuracy and share (not chosen); else —."""
    if "regions" in r:
        return f"**{r['regions']}** κ={r['kappa']:g} (global {r['cv_global_accuracy']:.3f})"
    tried = r.get("cv_regional_best")
    if not tried:
        return "—"
    return (
        f"not kept: best {tried['regions']} κ={tried['kappa']:g} {tried['cv_accuracy']:.3f} "
        f"at {tried['cv_cost_share']:.2f}"
    )


def won_lost(report: dict[str, Any], names: list[str]) -> list[str]:
    lines = ["| entry | won vs best single | lost vs best single |", "|---|---|---|"]
    for name in names:
        cal = (report["routers"].get(name) or {}).get("calibrated") or {}
        if "won" in cal:
            lines.append(f"| {name} | {cal['won']:.3f} | {cal['lost']:.3f} |")
    return lines


#: Strategies that never read the query embedding (`--no-embed` runs them on zero vectors).
EMBEDDING_FREE = ("chain",)


def run_without_embeddings(
    data_dir: Path,
    names: list[str],
    out: Path,
    seed: int,
    params: dict[str, Any],
    calibration: str = DEFAULT_CALIBRATION,
) -> dict[str, Any]:
    """`coe eval`'s report for embedding-free strategies, with no embedder loaded."""
    import numpy as np

    from training.dataset import costs_are_estimated, read_dataset, to_routing_data
    from training.evaluate import reference_results
    from training.report import build_report, write_report
    from training.strategy_eval import evaluate_strategy

    wrong = [n for n in names if n not in EMBEDDING_FREE]
    if wrong:
        raise SystemExit(f"--no-embed runs only {', '.join(EMBEDDING_FREE)}, not {wrong}")
    if any((params.get(n) or {}).get("regions") for n in names):
        raise SystemExit(
            "a regional chain finds a query's region from its embedding: drop --no-embed"
        )
    files = data_dir / "train.parquet", data_dir / "test.parquet"
    frames = [read_dataset(f) for f in files]
    train = to_routing_data(frames[0], files[0])
    test = to_routing_data(frames[1], files[1], models=train.models)
    x_train, x_test = np.zeros((len(train), 1)), np.zeros((len(test), 1))
    results = {
        n: evaluate_strategy(
            n, train, x_train, test, x_test, params.get(n), seed, calibration=calibration
        )
        for n in names
    }
    cost_scale = float(train.costs.max(axis=1).mean())
    results.update(reference_results(test, cost_scale))
    dataset = {
        "train": str(files[0]),
        "test": str(files[1]),
        "name": data_dir.name,
        "n_train": len(train),
        "n_test": len(test),
        "calibration": calibration,
        "models": list(train.models),
        "costs_estimated": any(costs_are_estimated(f) for f in frames),
        "cost_note": "as `coe data import` estimated them"
        if costs_are_estimated(frames[0])
        else "",
    }
    report = build_report(results, test, dataset, cost_scale)
    write_report(report, out)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--routers", default="ensemble,vote,cascade,chain,rl")
    parser.add_argument("--embed-cache", type=Path, default=Path("/work/cache/embeddings"))
    parser.add_argument("--params", default=None, help="JSON: family → hyperparameters")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reuse", action="store_true", help="read --out/report.json instead")
    parser.add_argument(
        "--no-embed", action="store_true", help="embedding-free strategies only (chain)"
    )
    parser.add_argument(
        "--calibration",
        choices=CALIBRATIONS,
        default=DEFAULT_CALIBRATION,
        help="`coe eval --calibration`: K-fold out-of-fold (cv) or one validation split",
    )
    args = parser.parse_args()
    names = [n for n in args.routers.split(",") if n]
    if args.reuse:
        report = json.loads((args.out / "report.json").read_text())
    elif args.no_embed:
        params = json.loads(args.params) if args.params else {}
        report = run_without_embeddings(
            args.data, names, args.out, args.seed, params, args.calibration
        )
    else:
        from training.fitting import run_eval

        params = json.loads(args.params) if args.params else {}
        train, test = args.data / "train.parquet", args.data / "test.parquet"
        report, _ = run_eval(
            train, test, names, args.out, args.seed, args.embed_cache, params, args.calibration
        )
    names = [n for n in [*names, *(f"{n}-steps" for n in names)] if n in report["routers"]]
    best = report["best_single"]
    single = report["singles"][best]
    ds = report["dataset"]
    print(
        f"{ds['name']}: {ds['n_train']} train / {ds['n_test']} test queries, "
        f"{len(ds['models'])} models; best single {best}: accuracy {single['accuracy']:.3f} at "
        f"{single['mean_cost_usd']:.3g} USD/query"
        + (" (ESTIMATED costs)" if ds["costs_estimated"] else "")
        + "\n"
    )
    parts = (
        headline(report, names),
        vote_by_k(report),
        won_lost(report, names),
        chain_table(report),
        chain_points(report),
    )
    for part in parts:
        if part:
            print("\n".join(part) + "\n")


if __name__ == "__main__":
    main()
