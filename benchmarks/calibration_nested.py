"""Do calibrated operating points keep their promise? Nested CV on a training file only.

    .venv/bin/python benchmarks/calibration_nested.py --train DIR/train.parquet \
        [--routers knn,cluster,ensemble] [--strategies chain] [--embed lexical|minilm] \
        [--embed-cache /work/cache/embeddings] [--folds 5] [--margins 0,1] [--seed 0]

The training file is cut into `--folds` outer folds. For each, the calibrated points are chosen
on the other folds exactly as `coe eval` chooses them on a training file
(`training.calibrate`: one 20% validation split, `split`, or K-fold out-of-fold, `cv`; for the
match target with a margin of 0, 1, … paired standard errors), the entry is fitted on those
folds, and the chosen point is read once on the held-out outer fold. A point keeps its promise
when, on the outer fold, `calibrated` costs no more than that fold's best single model
(accuracy ties: the cheaper) and `calibrated_match` is at least as accurate as it. Printed per
method: how often each promise held, and the mean accuracy and cost share (cost / the outer
best single model's) there. No test file is read.

Costs are whatever the file records (ESTIMATED for the imported benchmark sets).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.data import RoutingData
from training.calibrate import (
    best_single_index,
    calibration_parts,
    choose_points,
    out_of_fold,
)
from training.dataset import read_dataset, to_routing_data
from training.fitting import VALIDATION_FRACTION, router_sweeper

Sweeper = Callable[[RoutingData, np.ndarray], Any]


def _sweepers(
    routers: Sequence[str], strategies: Sequence[str], seed: int
) -> dict[str, tuple[Sweeper, float]]:
    """name → (a factory of `SweepPart`s on a data set, the split method's validation share)."""
    from training.recorded import reply_table
    from training.strategy_eval import VALIDATION, reply_key, strategy_sweeper

    out: dict[str, tuple[Sweeper, float]] = {}
    for name in routers:

        def make(data: RoutingData, x: np.ndarray, name: str = name) -> Any:
            scale = float(data.costs.max(axis=1).mean())
            return router_sweeper(name, data, x, {}, seed, scale)

        out[name] = (make, VALIDATION_FRACTION)
    for name in strategies:

        def make_s(data: RoutingData, x: np.ndarray, name: str = name) -> Any:
            assert data.responses is not None
            table = reply_table(data.responses, data.prompts, reply_key, data.tasks)
            return strategy_sweeper(name, {"seed": seed}, data, x, table)

        out[name] = (make_s, VALIDATION)
    return out


def nested(
    data: RoutingData,
    x: np.ndarray,
    make: Sweeper,
    fraction: float,
    margins: Sequence[float],
    folds: int,
    seed: int,
) -> list[dict[str, Any]]:
    """One row per (outer fold, method, target): the chosen point's outer accuracy, cost share
    and whether the promise held."""
    rows = []
    for inner_rows, outer_rows in calibration_parts(len(data), "cv", seed, folds):
        inner, outer = data.take(inner_rows), data.take(outer_rows)
        score, cost = make(data, x)(inner_rows, outer_rows)  # fitted on all inner folds
        j = best_single_index(outer)
        ref_acc, ref_cost = float(outer.scores[:, j].mean()), float(outer.costs[:, j].mean())
        inner_make = make(inner, x[inner_rows])
        for method in ("split", "cv"):
            parts = calibration_parts(len(inner), method, seed, fraction=fraction)
            pooled = out_of_fold(parts, inner_make)
            for margin in margins if method == "cv" else margins[:1]:
                for target, index in choose_points(pooled, inner, margin).items():
                    if target == "calibrated" and margin != margins[0]:
                        continue  # the margin applies to the match target only
                    label = method if margin == 0 else f"{method}+{margin:g}se"
                    acc = None if index is None else float(score[index].mean())
                    share = None if index is None else float(cost[index].mean()) / ref_cost
                    kept = index is not None and (
                        share <= 1 + 1e-9 if target == "calibrated" else acc >= ref_acc - 1e-12
                    )
                    rows.append(
                        {"method": label, "target": target, "acc": acc, "share": share,
                         "kept": kept, "ref_acc": ref_acc}
                    )  # fmt: skip
    return rows


def summary(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| target | method | promise kept | outer acc (mean) | acc − best single | cost share "
        "| never met on inner |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(r["target"], r["method"]) for r in rows})
    for target, method in keys:
        got = [r for r in rows if (r["target"], r["method"]) == (target, method)]
        met = [r for r in got if r["acc"] is not None]
        lines.append(
            f"| {target} | {method} | {sum(r['kept'] for r in got)}/{len(got)} "
            f"| {_mean([r['acc'] for r in met])} "
            f"| {_mean([r['acc'] - r['ref_acc'] for r in met], '+.4f')} "
            f"| {_mean([r['share'] for r in met])} | {len(got) - len(met)} |"
        )
    return lines


def _mean(values: list[float], fmt: str = ".3f") -> str:
    return format(statistics.fmean(values), fmt) if values else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, nargs="+", required=True)
    parser.add_argument("--routers", default="knn,cluster,ensemble")
    parser.add_argument("--strategies", default="")
    parser.add_argument("--embed", choices=("lexical", "minilm"), default="lexical")
    parser.add_argument("--embed-cache", type=Path, default=Path("/work/cache/embeddings"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--margins", default="0,1")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    margins = [float(m) for m in args.margins.split(",")]
    names = [n for n in args.routers.split(",") if n]
    strategies = [n for n in args.strategies.split(",") if n]
    makers = _sweepers(names, strategies, args.seed)
    every: list[dict[str, Any]] = []
    for path in args.train:
        data = to_routing_data(read_dataset(path), path)
        if not names:  # strategies that read no embedding
            x = np.zeros((len(data), 1), dtype=np.float32)
        elif args.embed == "lexical":
            from training.embed import lexical_embeddings

            x = lexical_embeddings(data.prompts, data.prompts)[0]
        else:
            from training.embed import embed_prompts

            x = embed_prompts(data.prompts, cache_dir=args.embed_cache, show_progress=False)
        for name, (make, fraction) in makers.items():
            start = time.monotonic()
            rows = nested(data, x, make, fraction, margins, args.folds, args.seed)
            for r in rows:
                r["entry"] = name
            every.extend(rows)
            print(f"## {path.parent.name} {name} ({time.monotonic() - start:.0f} s)\n")
            print("\n".join(summary(rows)) + "\n", flush=True)
    if len(every) > len(rows):
        print("## all files and entries pooled\n")
        print("\n".join(summary(every)))


if __name__ == "__main__":
    main()
