"""Agreement chains per subject where each row carries its subject (MMLU-Pro's `task`), offline.

    .venv/bin/python benchmarks/chain_subjects.py --data DIR [--out FILE.json]

The chain per region (`router.chain_regions`) is chosen on the training file's 5 folds only
(`router.chain_select.choose_chains`, regions = the row's own subject; one-SE against the global
chain, shrinkage, one λ for all subjects), then every budget is run once on the test file by the
vectorised simulation (`router.chain_search.simulate`, which a test holds equal to the served
episode), each test query by its own subject's chain. It prints, per budget, train-CV beside
test, and the K-fold points (`calibrated`: held-out cost share ≤ the best single model's own;
`safe`: ≤ 1.0× on every fold; `match`: the cheapest budget matching it held out).

This is what a chain per subject can do when the subject is known; served, `chain-regions`
finds it from the embedding instead (`task-knn`, `task`), which this script does not measure.
Costs are whatever the data records (ESTIMATED for these sources).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from router.chain_search import simulate
from router.chain_select import Picked, choose_chains
from router.chains import SHARES, answer_codes
from router.data import RoutingData


def run_chains(
    data: RoutingData, keys: np.ndarray, rel: np.ndarray, per_query: list[Picked]
) -> tuple[np.ndarray, np.ndarray]:
    """`(score, cost)` per query, each query run by its own chain."""
    score, cost = np.zeros(len(data)), np.zeros(len(data))
    for chain in set(per_query):
        rows = np.array([i for i, p in enumerate(per_query) if p == chain])
        members, needs = chain
        s, c = simulate(
            keys[rows],
            data.scores[rows],
            data.costs[rows],
            rel,
            np.array([members], dtype=np.int64),
            np.array([needs], dtype=np.int64),
        )
        score[rows], cost[rows] = s[:, 0], c[:, 0]
    return score, cost


def evaluate(train: RoutingData, test: RoutingData, seed: int = 0) -> dict[str, Any]:
    """Per budget: train-CV and test figures; and the three K-fold points."""
    names = sorted(set(train.tasks))
    unknown = sorted(set(test.tasks) - set(names))
    if unknown:
        raise SystemExit(f"test subjects not in the training file: {unknown}")
    labels = np.searchsorted(names, np.asarray(train.tasks))
    labels_test = np.searchsorted(names, np.asarray(test.tasks))
    assert train.responses is not None and test.responses is not None
    keys = answer_codes(train.responses, train.prompts, False)
    keys_test = answer_codes(test.responses, test.prompts, False)
    rel = train.scores.mean(0)
    chosen, record, regional = choose_chains(
        keys,
        train.scores,
        train.costs,
        rel,
        sorted(SHARES),
        5,
        seed,
        {"task": (labels, len(names))},
    )
    acc, cost = test.scores.mean(0), test.costs.mean(0)
    best = int(np.lexsort((cost, -acc))[0])
    rows = []
    for r in record:
        won = regional.get(r["share"])
        per = [won[1][int(i)] for i in labels_test] if won else [chosen[r["share"]]] * len(test)
        s, c = run_chains(test, keys_test, rel, per)
        rows.append(
            {**r, "test_accuracy": float(s.mean()), "test_share": float(c.mean() / cost[best])}
        )
    return {
        "best_single": train.models[best],
        "best_single_accuracy": float(acc[best]),
        "rows": rows,
        "points": points(rows),
    }


def points(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any] | None]:
    """The K-fold operating points (as `training.chains.ChainStrategy.cv_points` picks them)."""

    def top(pool: list[dict[str, Any]]) -> dict[str, Any] | None:
        return max(pool, key=lambda r: (r["cv_accuracy"], -r["cv_cost_share"]), default=None)

    cost = [r for r in rows if r["cv_cost_share"] <= r["cv_single_cost_share"] + 1e-9]
    safe = [r for r in rows if max(r["cv_fold_cost_shares"]) <= 1.0 + 1e-9]
    match = [r for r in rows if r["cv_accuracy"] >= r["cv_single_accuracy"] - 1e-12]
    cheapest = min(match, key=lambda r: (r["cv_cost_share"], r["share"]), default=None)
    return {"calibrated": top(cost), "safe": top(safe), "match": cheapest}


def main() -> None:
    from training.dataset import read_dataset, to_routing_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    files = args.data / "train.parquet", args.data / "test.parquet"
    train = to_routing_data(read_dataset(files[0]), files[0])
    test = to_routing_data(read_dataset(files[1]), files[1], models=train.models)
    result = evaluate(train, test, args.seed)
    print(
        f"{args.data.name}: best single on test {result['best_single']} "
        f"{result['best_single_accuracy']:.3f}; train-CV best single "
        f"{result['rows'][0]['cv_single_accuracy']:.3f} (costs ESTIMATED)\n"
    )
    print("| budget | per subject | train-CV acc | train-CV share | test acc | test share |")
    print("|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(
            f"| {r['share']:.2f} | {'yes' if 'regions' in r else 'no'} | {r['cv_accuracy']:.3f} "
            f"| {r['cv_cost_share']:.2f} | {r['test_accuracy']:.3f} | {r['test_share']:.2f} |"
        )
    print()
    for label, r in result["points"].items():
        if r is not None:
            print(
                f"{label}: budget {r['share']:.2f}, train-CV {r['cv_accuracy']:.3f} at "
                f"{r['cv_cost_share']:.2f}x -> test {r['test_accuracy']:.3f} at "
                f"{r['test_share']:.2f}x"
            )
    if args.out:
        args.out.write_text(json.dumps(result, default=str, indent=1))


if __name__ == "__main__":
    main()
