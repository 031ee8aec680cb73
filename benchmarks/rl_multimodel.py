"""Does the RL router's multi-step policy beat the best one-shot router on a multi-model set?

    PYTHONPATH=$PWD .venv/bin/python benchmarks/rl_multimodel.py --data /work/data/zeroeval-gsm \
        --embed-cache /work/cache/embeddings --split validation --out /work/out/h-rl/gsm-val \
        --variants '{"default": {}, "prior": {"inputs": "prior", "experts": "pareto"}}'

`--split validation` fits everything on 80% of the *training* file and measures on the other
20% (the `coe eval` calibration split, `training.fitting.validation_split`): the numbers to
choose RL variants by. `--split test` fits on the whole training file and measures on the test
file: the numbers to report, once the choice is made. Per entry: AIQ (the issue's target
metric), accuracy at ≤ the best single model's cost, and for `rl-steps` variants the calls
per query and the share of queries escalated (more than one call) at the λ of that point.
Each RL variant's learning curve (training return per iteration and, with `validation` > 0,
the greedy return on the policy's own held-out share) goes to `OUT/<variant>/`.
The one-shot routers are the families of `--one-shot` (defaults: the supervised routers).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from router.data import RoutingData
from router.rl import RLRouter
from router.rl_train import plot_learning_curve
from training.dataset import read_dataset, to_routing_data
from training.embed import embed_prompts
from training.evaluate import evaluate_curve, router_curve
from training.fitting import fit_router, validation_split
from training.rl_eval import evaluate_steps, recorded_env

ONE_SHOT = "knn,ensemble,cluster,mf,classifier,category"
RL_DEFAULTS: dict[str, Any] = {"progress": False}


def _load(
    data_dir: Path, split: str, cache: Path | None, seed: int
) -> tuple[RoutingData, np.ndarray, RoutingData, np.ndarray]:
    train_file, test_file = data_dir / "train.parquet", data_dir / "test.parquet"
    train = to_routing_data(read_dataset(train_file), train_file)
    x_train = embed_prompts(train.prompts, cache_dir=cache, description="embedding train")
    if split == "validation":
        fit_rows, val_rows = validation_split(len(train), 0.2, seed)
        return train.take(fit_rows), x_train[fit_rows], train.take(val_rows), x_train[val_rows]
    test = to_routing_data(read_dataset(test_file), test_file, models=train.models)
    x_test = embed_prompts(test.prompts, cache_dir=cache, description="embedding test")
    return train, x_train, test, x_test


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "aiq": metrics["aiq"],
        "acc_at_best_single_cost": metrics["acc_at_best_single_cost"],
        "cost_share_to_match_best_single": metrics["cost_share_to_match_best_single"],
    }


def _calls_at(
    router: RLRouter, x: np.ndarray, data: RoutingData, curve: list[list[float]], top_cost: float
) -> dict[str, float]:
    """Calls per query and share escalated at the curve's most accurate point at ≤ `top_cost`."""
    fits = [row for row in curve if row[0] <= top_cost * (1 + 1e-9)]
    if not fits:
        return {}
    row = max(fits, key=lambda r: (r[1], -r[0]))
    env = recorded_env(router, x, data)
    state = router.rollout(x, env, np.arange(len(data)), float(row[2]))
    return {
        "lambda": float(row[2]),
        "accuracy": float(row[1]),
        "cost_share": float(row[0] / top_cost),
        "calls_per_query": float(state.n_calls.mean()),
        "escalated": float((state.n_calls > 1).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--embed-cache", type=Path, default=None)
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--one-shot", default=ONE_SHOT, help="comma-separated; '' for none")
    parser.add_argument("--variants", default='{"default": {}}', help="JSON: name → rl params")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    train, x_train, held, x_held = _load(args.data, args.split, args.embed_cache, args.seed)
    cost_scale = float(train.costs.max(axis=1).mean())
    acc = held.scores.mean(axis=0)
    best = int(np.lexsort((held.costs.mean(axis=0), -acc))[0])
    top_cost = float(held.costs[:, best].mean())
    print(f"{args.data.name} {args.split}: {len(train)} fit / {len(held)} measured; best single "
          f"{held.models[best]} {acc[best]:.3f} at {top_cost:.6f} USD")  # fmt: skip
    results: dict[str, Any] = {}
    for name in [n for n in args.one_shot.split(",") if n]:
        t0 = time.time()
        router = fit_router(name, train, x_train, {}, args.seed)
        curve, picks = router_curve(router, x_held, held, cost_scale)
        results[name] = {**_headline(evaluate_curve(curve, picks, held).metrics),
                         "seconds": time.time() - t0}  # fmt: skip
        print(name, json.dumps(results[name]))
    for variant, params in json.loads(args.variants).items():
        t0 = time.time()
        router = RLRouter(**{**RL_DEFAULTS, "seed": args.seed, **params}).fit(train, x_train)
        steps = evaluate_steps(router, x_held, held)
        curve = steps.metrics["curve"]
        entry = {
            **_headline(steps.metrics),
            "at_best_single_cost": _calls_at(router, x_held, held, curve, top_cost),
            "shortlist": getattr(router, "shortlist_", None),
            "seconds": time.time() - t0,
            "params": params,
        }
        results[f"rl-steps:{variant}"] = entry
        run = args.out / variant
        run.mkdir(exist_ok=True)
        (run / "history.json").write_text(json.dumps(router.history_))
        plot_learning_curve(router.history_, run / "learning_curve.png")
        print(f"rl-steps:{variant}", json.dumps(entry))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print("\n| entry | AIQ | acc ≤ best single cost | calls/query | escalated |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        at = r.get("at_best_single_cost") or {}
        calls = f"{at['calls_per_query']:.2f}" if at else "1"
        esc = f"{at['escalated']:.1%}" if at else "—"
        a = r["acc_at_best_single_cost"]
        print(f"| {name} | {r['aiq']:.4f} | {a if a is None else f'{a:.3f}'} | {calls} | {esc} |")


if __name__ == "__main__":
    main()
