"""Placing a new expert in a table of per-region accuracies from a small profile (≤ 100 queries).

100 outcomes fix the new expert's overall strength well (± 0.05 in accuracy) and say little
about any one region (a region holds one or two of them). So its region profile is predicted
from a low-rank logistic (IRT-style) model of the existing experts' table, in which 100 queries
need to fix only a few numbers:

    logit p[k, j] = difficulty[k] + ability[j] + regions[k] · loadings[j]

`difficulty` (the mean logit of region k over the existing experts) and `regions` (rank
`rank`, an SVD of what is left after removing difficulty and ability) come from the existing
table. For the new expert, `ability` and its `loadings` are fitted by maximum a posteriori on
its outcomes, each query's prediction mixing the regions by the router's weights. The prior is
the existing experts' spread: their abilities (mean and variance) for `ability`, and for the
loadings that spread tightened `strength` times, so a newcomer deviates from "existing experts'
region difficulties, shifted by its own ability" only where its outcomes insist. `rank=0` is
the pure shift. `caution` lowers each region's prediction by that many posterior standard
deviations (Laplace approximation), so a newcomer takes a region only where its evidence is
strong. Example::

    prior = onboard_profile(table, weights, outcomes, rank=2, strength=4.0)   # (k,)
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SELECTIONS",
    "IrtTable",
    "impute_outcomes",
    "impute_reply_costs",
    "impute_twin",
    "onboard_profile",
    "select_profile",
]

_EPS = 1e-3


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


class IrtTable:
    """The low-rank decomposition of a `(k, m)` table of accuracies (see the module docstring)."""

    def __init__(self, table: np.ndarray, rank: int) -> None:
        logits = _logit(np.asarray(table, dtype=np.float64))
        self.difficulty = logits.mean(axis=1)
        self.ability = (logits - self.difficulty[:, None]).mean(axis=0)
        rest = logits - self.difficulty[:, None] - self.ability[None, :]
        rank = max(0, min(rank, min(rest.shape) - 1))
        u, s, vt = np.linalg.svd(rest, full_matrices=False)
        # region factors carry the singular values, so the existing loadings are unit-scale
        self.regions = u[:, :rank] * s[:rank] / np.sqrt(rest.shape[1])
        self.loadings = vt[:rank].T * np.sqrt(rest.shape[1])

    @property
    def rank(self) -> int:
        return int(self.regions.shape[1])

    def fit_new(
        self,
        weights: np.ndarray,
        outcomes: np.ndarray,
        strength: float,
        ability_strength: float = 1.0,
        coupled: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """MAP `theta = (ability, *loadings)` of a new expert from its `outcomes` `(n,)` in
        [0, 1] on queries whose region weights are `weights` `(n, k)`, and its posterior
        covariance (Laplace: the inverse Hessian of the objective at the MAP).
        `ability_strength` scales the prior's precision on ability (below 1: a newcomer
        stronger or weaker than every existing expert is pulled less toward their mean).
        `coupled`: the prior mean of the loadings is their least-squares line on ability
        across the existing experts (and its variance what that line leaves), not their
        mean: strong models share a shape over regions (a 2PL-like discrimination), so a
        newcomer's fitted ability moves its expected shape too."""
        from scipy.optimize import minimize

        offset = weights @ self.difficulty
        design = np.column_stack([np.ones(len(outcomes)), weights @ self.regions])
        start, coupling, spread = self._loading_prior(coupled)
        # precision of the prior: the population's for ability, `strength` × it for loadings
        scale = np.concatenate([[ability_strength], np.full(self.rank, strength)])
        precision = scale / np.maximum(spread, 1e-6)
        # the prior is Gaussian in u = M (theta - start), M = [[1, 0], [-coupling, I]]:
        # loadings measured from the line through the existing experts
        lift = np.eye(self.rank + 1)
        lift[1:, 0] = -coupling
        prior_hessian = lift.T @ (precision[:, None] * lift)
        y = np.clip(np.asarray(outcomes, dtype=np.float64), 0.0, 1.0)

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            z = offset + design @ theta
            # log(1 + e^z) - y z, computed stably; its gradient is (σ(z) - y)
            nll = np.logaddexp(0.0, z) - y * z
            diff = theta - start
            value = float(nll.sum() + 0.5 * diff @ prior_hessian @ diff)
            grad = design.T @ (1.0 / (1.0 + np.exp(-z)) - y) + prior_hessian @ diff
            return value, np.asarray(grad, dtype=np.float64)

        theta = np.asarray(minimize(loss, start, jac=True, method="L-BFGS-B").x, dtype=np.float64)
        p = 1.0 / (1.0 + np.exp(-(offset + design @ theta)))
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + prior_hessian
        return theta, np.asarray(np.linalg.inv(hessian), dtype=np.float64)

    def _loading_prior(self, coupled: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The prior's centre `(1 + rank,)`, the slope `(rank,)` of the loadings' centre on
        ability, and the variances `(1 + rank,)` (ability's, then each loading's about that
        centre), from the existing experts."""
        centre = np.concatenate([[self.ability.mean()], self.loadings.mean(axis=0)])
        spread = np.concatenate([[self.ability.var()], self.loadings.var(axis=0)])
        coupling = np.zeros(self.rank)
        if coupled and self.rank and len(self.ability) > 2 and self.ability.var() > 0:
            ability = self.ability - self.ability.mean()
            coupling = ability @ (self.loadings - centre[1:]) / (ability @ ability)
            left = self.loadings - centre[1:] - np.outer(ability, coupling)
            spread[1:] = (left**2).sum(axis=0) / (len(ability) - 2)
        return centre, coupling, spread

    def predict(
        self, theta: np.ndarray, covariance: np.ndarray | None = None, caution: float = 0.0
    ) -> np.ndarray:
        """`(k,)` accuracy per region of an expert with parameters `theta`; with `caution`
        > 0, each region's logit lowered by `caution` posterior standard deviations."""
        design = np.column_stack([np.ones(len(self.difficulty)), self.regions])
        z = self.difficulty + design @ theta
        if caution > 0 and covariance is not None:
            z = z - caution * np.sqrt(np.einsum("kd,de,ke->k", design, covariance, design))
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)


def onboard_profile(
    table: np.ndarray,
    weights: np.ndarray,
    outcomes: np.ndarray,
    rank: int,
    strength: float,
    caution: float = 0.0,
    ability_strength: float = 1.0,
    coupled: bool = False,
) -> np.ndarray:
    """`(k,)` predicted accuracy per region of a new expert, from the existing `table` `(k, m)`
    and its `outcomes` `(n,)` on queries with region `weights` `(n, k)`; `caution` posterior
    standard deviations below the MAP (a newcomer takes a region only on strong evidence);
    `coupled`: the loadings' prior follows ability (`IrtTable.fit_new`)."""
    irt = IrtTable(table, rank)
    theta, covariance = irt.fit_new(weights, outcomes, strength, ability_strength, coupled)
    return irt.predict(theta, covariance, caution)


def impute_outcomes(
    features: np.ndarray,
    offset: np.ndarray,
    outcomes: np.ndarray,
    features_all: np.ndarray,
    offset_all: np.ndarray,
    c: float,
) -> np.ndarray:
    """`(N,)` a newcomer's probability of being right on each of N queries, imputed from the
    existing experts' outcomes on the same query (collaborative filtering on the profile).

    Models' correctness is strongly correlated across queries, so the newcomer's `outcomes`
    `(n,)` on the profiled queries are regressed on the existing experts' outcomes there
    (`features` `(n, m)`), centred on the N queries' means (`features_all` `(N, m)`), by a
    logistic regression whose prior logit per query (`offset` `(n,)`, `offset_all` `(N,)`,
    e.g. the IRT profile of its region) is the offset, and whose weights an L2 penalty of
    `1 / c` pulls back to that prior (the intercept is free): 100 outcomes fit a dozen weights
    only where they agree. Example::

        p = impute_outcomes(known[rows], prior[rows], y, known, prior, c=0.1)   # (N,)
    """
    from scipy.optimize import minimize

    centre = np.asarray(features_all, dtype=np.float64).mean(axis=0)
    design = np.column_stack([np.ones(len(outcomes)), np.asarray(features) - centre])
    y = np.clip(np.asarray(outcomes, dtype=np.float64), 0.0, 1.0)
    offset = np.asarray(offset, dtype=np.float64)
    # the intercept is free, so the imputed outcomes on the profiled queries sum to what it
    # scored there (a penalised one biases the level toward the prior's)
    precision = np.full(design.shape[1], 1.0 / max(c, 1e-12))
    precision[0] = 1e-6

    def loss(beta: np.ndarray) -> tuple[float, np.ndarray]:
        z = offset + design @ beta
        value = float((np.logaddexp(0.0, z) - y * z).sum() + 0.5 * (precision * beta**2).sum())
        grad = design.T @ (1.0 / (1.0 + np.exp(-z)) - y) + precision * beta
        return value, np.asarray(grad, dtype=np.float64)

    start = np.zeros(design.shape[1])
    beta = np.asarray(minimize(loss, start, jac=True, method="L-BFGS-B").x, dtype=np.float64)
    z_all = np.asarray(offset_all, dtype=np.float64) + beta[0] + (features_all - centre) @ beta[1:]
    return np.asarray(1.0 / (1.0 + np.exp(-z_all)), dtype=np.float64)


def impute_twin(
    features: np.ndarray,
    offset: np.ndarray,
    outcomes: np.ndarray,
    features_all: np.ndarray,
    offset_all: np.ndarray,
    c: float,
) -> np.ndarray:
    """`(N,)` like `impute_outcomes`, but by averaging one-feature models: "the newcomer is
    like existing expert j" (its outcome regressed on expert j's feature alone, L2 `1 / c` on
    the slope) for each j, and the model with no feature, weighted by their likelihood on the
    profile (BIC: the slope costs `log(n) / 2`). 100 outcomes pick out one twin (a model of
    the same family) better than they fit a weight for every expert."""
    from scipy.optimize import minimize

    y = np.clip(np.asarray(outcomes, dtype=np.float64), 0.0, 1.0)
    offset = np.asarray(offset, dtype=np.float64)
    offset_all = np.asarray(offset_all, dtype=np.float64)
    centre = np.asarray(features_all, dtype=np.float64).mean(axis=0)
    x, x_all = np.asarray(features) - centre, np.asarray(features_all) - centre
    columns: list[tuple[np.ndarray | None, np.ndarray | None]] = [(None, None)]
    columns += [(x[:, j], x_all[:, j]) for j in range(x.shape[1])]
    logliks, predictions = [], []
    for feature, feature_all in columns:
        design = (
            np.ones((len(y), 1)) if feature is None else np.column_stack([np.ones(len(y)), feature])
        )
        precision = np.array([1e-6] + [1.0 / max(c, 1e-12)] * (design.shape[1] - 1))

        def loss(
            beta: np.ndarray, design: np.ndarray = design, precision: np.ndarray = precision
        ) -> tuple[float, np.ndarray]:
            z = offset + design @ beta
            value = float((np.logaddexp(0.0, z) - y * z).sum() + 0.5 * (precision * beta**2).sum())
            grad = design.T @ (1.0 / (1.0 + np.exp(-z)) - y) + precision * beta
            return value, np.asarray(grad, dtype=np.float64)

        beta = minimize(loss, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B").x
        z = offset + design @ beta
        loglik = float((y * z - np.logaddexp(0.0, z)).sum())
        logliks.append(loglik - 0.5 * np.log(len(y)) * (design.shape[1] - 1))
        z_all = offset_all + beta[0] + (0.0 if feature_all is None else beta[1] * feature_all)
        predictions.append(1.0 / (1.0 + np.exp(-z_all)))
    weight = np.exp(np.array(logliks) - max(logliks))
    weight /= weight.sum()
    return np.asarray(weight @ np.array(predictions), dtype=np.float64)


def impute_reply_costs(
    known_log: np.ndarray, reply: np.ndarray, known_log_all: np.ndarray, ridge: float = 10.0
) -> np.ndarray:
    """`(N,)` a newcomer's expected reply cost on each of N queries, from the existing experts'
    log reply costs on the same query (`known_log_all` `(N, m)`; `known_log` `(n, m)` on the
    profiled queries, where its replies cost `reply` `(n,)`).

    A question that makes every existing expert write long makes the newcomer write long too:
    its log reply cost is a ridge regression (penalty `ridge`) on theirs, centred, and the
    level is then set so the imputed costs of the profiled queries sum to what they cost.
    """
    centre = np.asarray(known_log_all, dtype=np.float64).mean(axis=0)
    x = np.asarray(known_log, dtype=np.float64) - centre
    y = np.log(np.maximum(np.asarray(reply, dtype=np.float64), 1e-12))
    beta = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ (y - y.mean()))
    shape = np.exp((np.asarray(known_log_all, dtype=np.float64) - centre) @ beta)
    profiled = np.exp(x @ beta)
    level = float(np.sum(reply)) / max(float(profiled.sum()), 1e-300)
    return np.asarray(level * shape, dtype=np.float64)


#: How `select_profile` picks the queries to profile a newcomer on.
SELECTIONS = ("random", "stratified", "doptimal", "doptimal-cf", "half-doptimal")


def select_profile(
    weights: np.ndarray,
    n: int,
    method: str,
    rng: np.random.Generator,
    irt: IrtTable | None = None,
    features: np.ndarray | None = None,
    feature_var: float = 1.0,
) -> np.ndarray:
    """Sorted indices of `n` of the candidate queries (region `weights` `(N, k)`) to profile a
    newcomer on, chosen before any of its answers are seen.

    `random` draws them uniformly. `stratified` gives each region (a query's most likely one)
    its share of the `n` by mass, largest remainders first, drawn at random inside the region,
    so every region the router knows is seen about as often as it is asked. `doptimal` picks
    greedily the queries that most shrink the volume of the IRT posterior of a newcomer of
    average ability (`irt` required: max log det of the Fisher information, prior included),
    which favours the regions that separate experts most. `doptimal-cf` does the same for the
    `cf` model: the design adds each query's `features` `(N, f)` (what its region does not
    explain of the existing experts' outcomes there, centred), with prior variance
    `feature_var` (`onboard_cf_c`), so queries where the experts disagree unexpectedly count.
    `half-doptimal` draws half of the `n` at random and chooses the rest D-optimally given
    them (a region `doptimal` would never ask about is still seen about as often as asked).
    """
    total = len(weights)
    if n >= total:
        return np.arange(total)
    if method == "random":
        return np.sort(rng.choice(total, n, replace=False))
    if method == "stratified":
        return _stratified(weights, n, rng)
    if method == "doptimal":
        if irt is None:
            raise ValueError("doptimal selection needs the router's IRT table")
        return _doptimal(weights, n, irt)
    if method == "half-doptimal":
        if irt is None:
            raise ValueError("half-doptimal selection needs the router's IRT table")
        return _doptimal(weights, n, irt, start=rng.choice(total, n // 2, replace=False))
    if method == "doptimal-cf":
        if irt is None or features is None:
            raise ValueError("doptimal-cf selection needs the IRT table and the cf features")
        return _doptimal(weights, n, irt, features, feature_var)
    raise ValueError(f"unknown profile selection {method!r}; choose from {SELECTIONS}")


def _stratified(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    region = weights.argmax(axis=1)
    members = [np.flatnonzero(region == k) for k in range(weights.shape[1])]
    mass = np.array([len(m) for m in members], dtype=np.float64)
    quota = n * mass / mass.sum()
    take = np.floor(quota).astype(int)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - take.sum()]] += 1
    picked = [rng.choice(m, t, replace=False) for m, t in zip(members, take, strict=True) if t]
    return np.sort(np.concatenate(picked))


def _doptimal(
    weights: np.ndarray,
    n: int,
    irt: IrtTable,
    features: np.ndarray | None = None,
    feature_var: float = 1.0,
    start: np.ndarray | None = None,
) -> np.ndarray:
    design = np.column_stack([np.ones(len(weights)), weights @ irt.regions])
    mean = np.concatenate([[irt.ability.mean()], irt.loadings.mean(axis=0)])
    spread = np.concatenate([[irt.ability.var()], irt.loadings.var(axis=0)])
    p = 1.0 / (1.0 + np.exp(-(weights @ irt.difficulty + design @ mean)))
    if features is not None:
        extra = np.asarray(features, dtype=np.float64)
        design = np.column_stack([design, extra - extra.mean(axis=0)])
        spread = np.concatenate([spread, np.full(extra.shape[1], feature_var)])
    info = p * (1 - p)
    inverse = np.diag(np.maximum(spread, 1e-6))  # the prior's covariance
    chosen = np.zeros(len(weights), dtype=bool)
    for i in [] if start is None else [int(i) for i in start]:  # already profiled
        chosen[i] = True
        v = inverse @ design[i]
        inverse = inverse - np.outer(v, v) * info[i] / (1.0 + info[i] * design[i] @ v)
    for _ in range(n - int(chosen.sum())):
        # log det grows by log(1 + a d' M^-1 d) (matrix determinant lemma)
        gain = info * np.einsum("nd,de,ne->n", design, inverse, design)
        gain[chosen] = -np.inf
        i = int(np.argmax(gain))
        chosen[i] = True
        v = inverse @ design[i]
        inverse = inverse - np.outer(v, v) * info[i] / (1.0 + info[i] * design[i] @ v)
    return np.flatnonzero(chosen)


def onboard_reply_costs(
    table: np.ndarray, groups: np.ndarray, reply: np.ndarray, shrink: float
) -> np.ndarray:
    """`(k,)` a new expert's expected reply cost per region from its `reply` costs `(n,)` on
    profiled queries in regions `groups` `(n,)`, given the existing experts' `(k, m)` table.

    A region where every existing expert writes long (a derivation) is long for the newcomer
    too, so its prior per region is the existing experts' relative length there (geometric
    mean over experts of region / overall) times the newcomer's own level, fitted so the prior
    reproduces its total over the profile; each region's own replies correct it by
    `shrink` pseudo-queries, as the cost model does for an expert it was fitted with.
    """
    positive = np.maximum(np.asarray(table, dtype=np.float64), 1e-12)
    relative = np.exp(np.log(positive / positive.mean(axis=0, keepdims=True)).mean(axis=1))
    reply = np.asarray(reply, dtype=np.float64)
    level = reply.sum() / max(float(relative[groups].sum()), 1e-12)
    prior = level * relative
    sums = np.bincount(groups, weights=reply, minlength=len(table))
    counts = np.bincount(groups, minlength=len(table)).astype(np.float64)
    return np.asarray((sums + shrink * prior) / (counts + shrink), dtype=np.float64)
