"""`coe eval` for offline strategies (`vote`, `cascade`): curves, metrics, a calibrated point.

A strategy (`training.strategies`) is fitted on the training file and run at every operating
point of its grid on the test file's recorded replies. Its report entry has the same fields as a
router's (`training.evaluate`), computed from the Pareto-efficient points (a dominated point
changes none of the metrics), plus:

- `curve` rows `[mean_cost_usd, accuracy, λ (0 where the strategy has none), calls/query]`;
- `points`: the parameters of each curve row, and the share of queries that made more than one
  call (`escalated`); `sweep`: every grid point run, dominated ones included (`params`,
  `cost_usd`, `accuracy`, `calls_per_query`, `escalated`), for analyses such as a vote's gain
  against its k;
- `calls_per_query` and `escalated` at the operating point of `acc_at_best_single_cost`;
- `calibrated` and `calibrated_match`: the points chosen on the *training* file for "mean cost
  ≤ the best single model's" and "accuracy ≥ the best single model's" (`coe eval
  --calibration`: by default `split`, one 25% validation split; `cv`: on the out-of-fold curve
  of K strategies each fitted on K−1 folds, `training.calibrate`), then run once on the test file by
  the strategy fitted on the whole training file: `{params, lambda, accuracy, cost_usd,
  cost_share, calls_per_query, escalated, met_on_validation, won, lost, chosen_by}`, where
  `won` / `lost` are the shares of test queries the strategy gets right / wrong where the best
  single model gets them wrong / right (where composition loses);
- for the agreement chain, points chosen on the folds its own fit already cuts
  (`training.chains.ChainStrategy.cv_points`; these folds also chose each budget's chain, so
  their estimates lean optimistic), same fields: `calibrated_safe` (the most accurate budget
  whose held-out cost stayed ≤ the best single model's on every fold), `calibrated_folds` and
  `calibrated_match_folds` (most accurate within the best single model's cost; cheapest
  matching its accuracy). Under `--calibration split` these last two are the chain's
  `calibrated` and `calibrated_match` (`chosen_by: "chain folds"`), as before; under `cv` the
  chain is calibrated like every other entry, on chains fitted without the held fold.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from router.data import RoutingData
from training.calibrate import (
    DEFAULT_CALIBRATION,
    calibration_parts,
    choose_points,
    out_of_fold,
)
from training.chains import ChainStrategy
from training.errors import CoeTrainingError
from training.evaluate import RouterResult, evaluate_curve
from training.recorded import AnswerKey, ReplyTable, reply_table
from training.strategies import STRATEGIES, Episodes, Strategy

__all__ = [
    "ALL_STRATEGIES",
    "evaluate_strategy",
    "is_strategy",
    "pareto",
    "reply_key",
    "sweep_strategy",
]

#: Every offline strategy by name: `training.strategies`' and the agreement chain (its own
#: module, which subclasses `Strategy` and so cannot be listed there).
ALL_STRATEGIES: dict[str, type[Strategy]] = {**STRATEGIES, ChainStrategy.name: ChainStrategy}

#: Share of the training queries held out to choose the calibrated operating point.
VALIDATION = 0.25


def is_strategy(name: str) -> bool:
    """Whether `coe eval --routers` names an offline strategy rather than a router."""
    return name in ALL_STRATEGIES


def reply_key(reply: str, prompt: str, task: str | None) -> str | None:
    """A reply's conclusion as the graders read it (`training.grading`): the option letter of
    a multiple-choice prompt, the MATH answer (`math_key`) for a `math*` task, else the final
    number."""
    from router.answers import conclusion

    return conclusion(reply, prompt, bool(task and task.lower().startswith("math")))


def _table(data: RoutingData, key: AnswerKey | None, role: str) -> ReplyTable:
    if data.responses is None:
        raise CoeTrainingError(
            f"the {role} file records no replies (no `response` column): offline strategies "
            "(vote, cascade) need every model's reply; import a source that keeps them"
        )
    return reply_table(data.responses, data.prompts, key or reply_key, data.tasks)


def sweep_strategy(
    strategy: Strategy, data: RoutingData, table: ReplyTable, quality: np.ndarray
) -> list[tuple[dict[str, float], Episodes]]:
    """Every grid point of a fitted `strategy` run on `data`."""
    return [(point, strategy.run(data, table, quality, point)) for point in strategy.grid()]


def pareto(runs: list[tuple[dict[str, float], Episodes]]) -> list[int]:
    """Indices of the runs no other run beats on both mean cost and accuracy, cheapest first."""
    stats = [(float(r.cost.mean()), float(r.score.mean()), i) for i, (_, r) in enumerate(runs)]
    keep: list[int] = []
    best = -np.inf
    for _cost, acc, i in sorted(stats, key=lambda s: (s[0], -s[1])):
        if acc > best + 1e-12:
            keep.append(i)
            best = acc
    return keep


def _row(point: dict[str, float], run: Episodes) -> list[float]:
    return [
        float(run.cost.mean()),
        float(run.score.mean()),
        float(point.get("lambda", 0.0)),
        float(run.calls.mean()),
    ]


def _summary(strategy: Strategy, point: dict[str, float], run: Episodes) -> dict[str, Any]:
    return {
        "params": point,
        "cost_usd": float(run.cost.mean()),
        "accuracy": float(run.score.mean()),
        "calls_per_query": float(run.calls.mean()),
        "escalated": strategy.escalated(run, point),
    }


def _best_single(data: RoutingData) -> tuple[float, float]:
    acc, cost = data.scores.mean(axis=0), data.costs.mean(axis=0)
    best = int(np.lexsort((cost, -acc))[0])
    return float(acc[best]), float(cost[best])


def _pick(runs: list[tuple[dict[str, float], Episodes]], max_cost: float) -> tuple[int, bool]:
    """The most accurate run with mean cost ≤ `max_cost` (cheaper on ties); the cheapest run
    when none fits (and False)."""
    fits = [i for i, (_, r) in enumerate(runs) if r.cost.mean() <= max_cost * (1 + 1e-9)]
    if not fits:
        return min(range(len(runs)), key=lambda i: runs[i][1].cost.mean()), False
    return max(fits, key=lambda i: (runs[i][1].score.mean(), -runs[i][1].cost.mean())), True


def strategy_sweeper(
    name: str, params: dict[str, Any], data: RoutingData, x: np.ndarray, table: ReplyTable
) -> Any:
    """`training.calibrate.SweepPart` of strategy `name`: fitted on the fit rows, run at every
    grid point on the held rows."""
    from training.cv import subset

    def sweep_part(fit_rows: np.ndarray, held_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        part = ALL_STRATEGIES[name](**params)
        part.fit(subset(data, fit_rows), x[fit_rows], table.take(fit_rows))
        held = subset(data, held_rows)
        quality = part.quality(x[held_rows], held.prompts)
        runs = sweep_strategy(part, held, table.take(held_rows), quality)
        return np.stack([r.score for _, r in runs]), np.stack([r.cost for _, r in runs])

    return sweep_part


def _calibrated(
    name: str,
    params: dict[str, Any],
    train: tuple[RoutingData, np.ndarray, ReplyTable],
    fitted: Strategy,
    test: tuple[RoutingData, np.ndarray, ReplyTable],
    seed: int,
    calibration: str = DEFAULT_CALIBRATION,
) -> dict[str, dict[str, Any]]:
    """`calibrated` and `calibrated_match`, chosen on the training file
    (`training.calibrate.choose_points` on the pooled held-out curve of `calibration_parts`),
    run once on the test file. Where no grid point meets a target on the training side, the
    cheapest (`calibrated`) or most accurate (`calibrated_match`) point, `met_on_validation`
    False."""
    data, x, table = train
    parts = calibration_parts(len(data), calibration, seed, fraction=VALIDATION)
    pooled = out_of_fold(parts, strategy_sweeper(name, params, data, x, table))
    chosen = choose_points(pooled, data)
    curve = pooled.curve()
    fallback = {
        "calibrated": min(range(len(curve)), key=lambda i: (curve[i][0], -curve[i][1])),
        "calibrated_match": max(range(len(curve)), key=lambda i: (curve[i][1], -curve[i][0])),
    }
    grid = fitted.grid()
    out = {}
    for label, index in chosen.items():
        point = grid[fallback[label] if index is None else index]
        out[label] = {**_on_test(fitted, test, point, index is not None), "chosen_by": calibration}
    return out


def _on_test(
    fitted: Strategy,
    test: tuple[RoutingData, np.ndarray, ReplyTable],
    point: dict[str, float],
    met: bool,
) -> dict[str, Any]:
    """The operating point `point`, chosen on training data, run once on the test file."""
    test_data, test_x, test_table = test
    run = fitted.run(test_data, test_table, fitted.quality(test_x, test_data.prompts), point)
    best_cost = _best_single(test_data)[1]
    acc, cost = test_data.scores.mean(axis=0), test_data.costs.mean(axis=0)
    single = test_data.scores[:, int(np.lexsort((cost, -acc))[0])]
    return {
        "params": point,
        "lambda": point.get("lambda"),
        "accuracy": float(run.score.mean()),
        "cost_usd": float(run.cost.mean()),
        "cost_share": float(run.cost.mean()) / best_cost if best_cost > 0 else None,
        "calls_per_query": float(run.calls.mean()),
        "escalated": fitted.escalated(run, point),
        "met_on_validation": met,
        "won": float(((run.score > 0.5) & (single < 0.5)).mean()),
        "lost": float(((run.score < 0.5) & (single > 0.5)).mean()),
    }


def evaluate_strategy(
    name: str,
    train: RoutingData,
    x_train: np.ndarray,
    test: RoutingData,
    x_test: np.ndarray,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    key: AnswerKey | None = None,
    calibration: str = DEFAULT_CALIBRATION,
) -> RouterResult:
    """Fit strategy `name` on `train`, sweep it on `test`, and report it like a router.

    `key` reads a reply's conclusion (default: `reply_key`, as the graders read it).
    `calibration` chooses the calibrated points (`training.calibrate.calibration_parts`: `"cv"`
    K-fold out-of-fold, `"split"` one validation split; a chain under `"split"` keeps the
    points of its own fitting folds, `ChainStrategy.cv_points`).
    """
    params = {"seed": seed, **(params or {})}
    try:
        strategy = ALL_STRATEGIES[name](**params)
    except TypeError as exc:
        raise CoeTrainingError(f"bad parameters for strategy {name!r}: {exc}") from exc
    train_table, test_table = _table(train, key, "training"), _table(test, key, "test")
    strategy.fit(train, x_train, train_table)
    runs = sweep_strategy(strategy, test, test_table, strategy.quality(x_test, test.prompts))
    keep = pareto(runs)
    curve = [_row(*runs[i]) for i in keep]
    result = evaluate_curve(curve, [runs[i][1].answer for i in keep], test)
    m = result.metrics
    m["points"] = [
        {**runs[i][0], "escalated": strategy.escalated(runs[i][1], runs[i][0])} for i in keep
    ]
    m["sweep"] = [_summary(strategy, point, run) for point, run in runs]
    op, _ = _pick([runs[i] for i in keep], _best_single(test)[1])
    m["calls_per_query"] = curve[op][3]
    m["escalated"] = m["points"][op]["escalated"]
    train_parts = (train, x_train, train_table)
    test_parts = (test, x_test, test_table)
    if isinstance(strategy, ChainStrategy):
        m["cv"] = strategy.report(runs)
        for label, (point, met) in strategy.cv_points().items():
            m[f"calibrated_{label}"] = _on_test(strategy, test_parts, point, met)
        # one validation split of a few hundred queries picked cheap chains that lost 3.7
        # points on MATH-L5: the chain's `split` calibration is its fitting folds' estimate
        m["calibrated"] = {**m.pop("calibrated_cost"), "chosen_by": "chain folds"}
        m["calibrated_match"] |= {"chosen_by": "chain folds"}
        if calibration == "split":
            return RouterResult(kind="router", metrics=m)
        m["calibrated_folds"], m["calibrated_match_folds"] = m["calibrated"], m["calibrated_match"]
    m.update(_calibrated(name, params, train_parts, strategy, test_parts, seed, calibration))
    return RouterResult(kind="router", metrics=m)
