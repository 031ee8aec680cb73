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

__all__ = ["IrtTable", "onboard_profile"]

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
        self, weights: np.ndarray, outcomes: np.ndarray, strength: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """MAP `theta = (ability, *loadings)` of a new expert from its `outcomes` `(n,)` in
        [0, 1] on queries whose region weights are `weights` `(n, k)`, and its posterior
        covariance (Laplace: the inverse Hessian of the objective at the MAP)."""
        from scipy.optimize import minimize

        offset = weights @ self.difficulty
        design = np.column_stack([np.ones(len(outcomes)), weights @ self.regions])
        mean = np.concatenate([[self.ability.mean()], self.loadings.mean(axis=0)])
        spread = np.concatenate([[self.ability.var()], self.loadings.var(axis=0)])
        # precision of the prior: the population's for ability, `strength` × it for loadings
        precision = np.concatenate([[1.0], np.full(self.rank, strength)]) / np.maximum(spread, 1e-6)
        y = np.clip(np.asarray(outcomes, dtype=np.float64), 0.0, 1.0)

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            z = offset + design @ theta
            # log(1 + e^z) - y z, computed stably; its gradient is (σ(z) - y)
            nll = np.logaddexp(0.0, z) - y * z
            diff = theta - mean
            value = float(nll.sum() + 0.5 * (precision * diff**2).sum())
            grad = design.T @ (1.0 / (1.0 + np.exp(-z)) - y) + precision * diff
            return value, np.asarray(grad, dtype=np.float64)

        theta = np.asarray(minimize(loss, mean, jac=True, method="L-BFGS-B").x, dtype=np.float64)
        p = 1.0 / (1.0 + np.exp(-(offset + design @ theta)))
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + np.diag(precision)
        return theta, np.asarray(np.linalg.inv(hessian), dtype=np.float64)

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
) -> np.ndarray:
    """`(k,)` predicted accuracy per region of a new expert, from the existing `table` `(k, m)`
    and its `outcomes` `(n,)` on queries with region `weights` `(n, k)`; `caution` posterior
    standard deviations below the MAP (a newcomer takes a region only on strong evidence)."""
    irt = IrtTable(table, rank)
    theta, covariance = irt.fit_new(weights, outcomes, strength)
    return irt.predict(theta, covariance, caution)
