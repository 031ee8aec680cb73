"""Does seeing the cheap model's answer pay? Accuracy at equal cost, from a `coe eval` report.

    .venv/bin/python benchmarks/rl_answers.py --report reports/rl-gsm8k/report.json \
        --test data/routellm-gsm8k/test.parquet [--routers rl-steps,rl,knn,ensemble,mf]

For each cost budget (a share of the best single model's mean cost), the best accuracy each
router's curve reaches at or under it, and for a multi-step router the calls per query there.
Beside them, a hand-written cascade over the same answer features the RL router observes
(`router.rl_answers`): call the cheapest model, escalate to the best single model when the
cheap answer does not conclude in the expected format. It shows what the features are worth
on the data, apart from whether the policy learns to use them. Costs are those of the report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from router.rl_answers import recorded_answers
from training.dataset import read_dataset, to_routing_data

SHARES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


def _best_at(curve: np.ndarray, cost: float) -> str:
    ok = curve[:, 0] <= cost * (1 + 1e-9)
    if not ok.any():
        return "—"
    i = np.flatnonzero(ok)[np.argmax(curve[ok, 1])]
    calls = f" ({curve[i, 3]:.2f} calls)" if curve.shape[1] > 3 else ""
    return f"{curve[i, 1]:.3f}{calls}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--routers", default="rl-steps,rl,knn,ensemble,mf")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    best = report["best_single"]
    top = report["singles"][best]["mean_cost_usd"]
    test = to_routing_data(read_dataset(args.test), args.test)
    if test.responses is None:
        raise SystemExit(f"{args.test} records no responses")
    cheap = int(np.argmin(test.costs.mean(axis=0)))
    strong = list(test.models).index(best)
    unmarked = recorded_answers(test.responses, test.prompts).static[:, cheap, 1] == 0
    rows = np.arange(len(test))
    accuracy = np.where(unmarked, test.scores[:, strong], test.scores[rows, cheap]).mean()
    cost = (test.costs[:, cheap] + np.where(unmarked, test.costs[:, strong], 0.0)).mean()
    print(f"{len(test)} test queries; cost shares of {best} ({top:.5f} USD/query)\n")
    print("| router | " + " | ".join(f"{s:.0%}" for s in SHARES) + " |")
    print("|---" * (len(SHARES) + 1) + "|")
    for name in args.routers.split(","):
        curve = np.asarray(report["routers"][name]["curve"])
        cells = [_best_at(curve, s * top) for s in SHARES]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        f"\nhand cascade ({test.models[cheap]} → {best} when unmarked): accuracy {accuracy:.3f} "
        f"at {cost / top:.1%} of the cost, escalating {unmarked.mean():.1%}, "
        f"{1 + unmarked.mean():.2f} calls per query"
    )


if __name__ == "__main__":
    main()
