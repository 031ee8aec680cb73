"""Per-cluster expert profiles (Avengers-Pro): k-means regions of the query embedding, and in each
region every expert's accuracy.

`fit` clusters the training embeddings into `n_clusters` regions (k-means on unit vectors) and
records each expert's mean score per region, shrunk toward the expert's overall accuracy by
`prior` pseudo-queries (a region of 5 queries says little). A query's predicted quality mixes the
profiles of its `top` most similar regions, weighted by `softmax(similarity / temperature)`.
The reply-cost model (`router.costs`) shares the same regions.

A new expert joins a fitted router from a small profile (`add_experts`, `coe train --add`),
without refitting. 100 outcomes measure its overall strength well and any one region hardly at
all, so its region profile comes from a low-rank IRT model of the existing table
(`router.onboard`, `onboard="irt"`, and the prior of `cf` below): the regions' difficulty
for the existing experts, shifted by the newcomer's fitted ability, plus `onboard_rank`
loadings on the table's main contrasts, held `onboard_strength` times tighter than the
existing experts' spread about their line on ability (`onboard_coupled`, the default: strong
models share a shape over regions, so the newcomer's fitted ability sets its expected shape;
False centres the loadings on the existing experts' mean). That profile is then corrected by
its own outcomes in each region, shrunk by `onboard_prior` pseudo-queries. The prior on its
ability is flat (`onboard_ability=0`; 1 is the existing experts' spread, which put a newcomer
stronger than all of them, gemini-1.5-pro, 0.035 below full retraining per region).
Its reply cost per region is the existing experts' length pattern at its own measured level,
corrected by its replies in each region (`onboard_costs="pool"`; `"own"`: its own mean). The
earlier model, a logistic regression (`onboard_c`) of its outcomes on every existing expert's
profile (`onboard="regression"`), is kept for comparison: one weight per existing expert from
100 noisy outcomes can hand a mediocre newcomer whole regions. `select_profile` says which
queries to profile (random, the default; stratified by region; D-optimal for the IRT fit).

`onboard="cf"` (collaborative filtering, the default) uses that models' correctness is strongly
correlated across queries: the router remembers its training file compactly (each query's key,
every expert's outcome and log reply cost, its regions; `_remember`), and where the profiled
queries are training queries, the newcomer's outcome is regressed on what their region does not
explain of the existing experts' outcomes on the same query (`impute_outcomes`, L2
`onboard_cf_c`, the IRT profile above as the offset), imputed on every training query, its
region profile built from that column as `fit` builds one and corrected per region by what the
imputation missed on the profiled queries. A profile of other questions (or an artifact pickled
before the router remembered its training file) onboards as `irt`. `onboard_costs="cf"` imputes
the reply cost per query likewise (`impute_reply_costs`). `onboard_cf_model="twin"` averages
one-feature models instead ("the newcomer is like expert j", `impute_twin`); on the training
file's CV it did no better than the ridge (`"ridge"`, the default). `select_training_profile`
picks which remembered training queries to profile (`coe profile --from-training --select`).
`onboard_lcb` takes that many bootstrap standard deviations (profile resampled) off each
region's `cf` estimate, so a newcomer takes a region only on strong evidence; on the training
file's CV it cost the strong newcomers more than it saved on an over-placed one, so it is off.
The defaults were chosen by leave-one-model-out on 80/20 splits of the MMLU-Pro training file
(`benchmarks/onboard_cv.py`), never on a test file.

Example::

    router = ClusterRouter(n_clusters=60).fit(data, embeddings)
    router.score(query_embeddings, queries)            # (n, m)
    bigger = router.add_experts(profile, profile_embeddings)   # one column more
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Self

import numpy as np

from router.base import Router, register
from router.costs import ReplyCostModel, kmeans, prompt_tokens_of, reply_costs_of
from router.data import RoutingData
from router.onboard import (
    IrtTable,
    impute_outcomes,
    impute_reply_costs,
    impute_twin,
    onboard_profile,
    onboard_reply_costs,
    select_profile,
)

__all__ = ["ClusterRouter", "OnboardingError", "query_keys"]

_EPS = 1e-3
#: profiled queries found in the training file below which `cf` onboards as `irt`
_MIN_MATCHED = 10
#: profile resamples behind `onboard_lcb`'s spread of a newcomer's region estimates
_LCB_RESAMPLES = 30


class OnboardingError(ValueError):
    """A profile that cannot add an expert to a fitted router (what to fix is in the message)."""


def query_keys(query_ids: Sequence[str], prompts: Sequence[str]) -> np.ndarray:
    """`(n,)` int64 keys of queries (id and prompt text hashed together), so a profiled query
    is matched with the same query of the training file and never with a namesake."""
    import hashlib

    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(f"{q}\0{p}".encode(), digest_size=8).digest(), "little", signed=True
            )
            for q, p in zip(query_ids, prompts, strict=True)
        ],
        dtype=np.int64,
    )


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


@register
class ClusterRouter(Router):
    """Per-region accuracy of each expert; see the module docstring."""

    name = "cluster"
    # Artifacts pickled before these parameters existed onboard with today's defaults.
    onboard = "cf"
    onboard_rank = 2
    onboard_strength = 0.5
    onboard_caution = 0.0
    onboard_ability = 0.0
    onboard_costs = "pool"
    onboard_cf_c = 1.0
    onboard_cf_model = "ridge"
    onboard_coupled = True
    onboard_lcb = 0.0
    # what `cf` onboarding reads of the training file; None in artifacts pickled before it
    train_keys_: np.ndarray | None = None
    train_scores_: np.ndarray | None = None
    train_regions_: np.ndarray | None = None
    train_mix_: np.ndarray | None = None
    train_log_reply_: np.ndarray | None = None

    def __init__(
        self,
        n_clusters: int = 60,
        top: int = 3,
        temperature: float = 0.05,
        prior: float = 5.0,
        onboard: str = "cf",
        onboard_rank: int = 2,
        onboard_strength: float = 0.5,
        onboard_caution: float = 0.0,
        onboard_ability: float = 0.0,
        onboard_costs: str = "pool",
        onboard_c: float = 0.1,
        onboard_prior: float = 50.0,
        onboard_cf_c: float = 1.0,
        onboard_cf_model: str = "ridge",
        onboard_coupled: bool = True,
        onboard_lcb: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.top = top
        self.temperature = temperature
        self.prior = prior
        self.onboard = onboard
        self.onboard_rank = onboard_rank
        self.onboard_strength = onboard_strength
        self.onboard_caution = onboard_caution
        self.onboard_ability = onboard_ability
        self.onboard_costs = onboard_costs
        self.onboard_c = onboard_c
        self.onboard_prior = onboard_prior
        self.onboard_cf_c = onboard_cf_c
        self.onboard_cf_model = onboard_cf_model
        self.onboard_coupled = onboard_coupled
        self.onboard_lcb = onboard_lcb
        self.seed = seed

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        super().fit(data, embeddings)
        k = min(self.n_clusters, max(1, len(data) // 10))
        self.centroids_ = kmeans(embeddings, k, self.seed)
        weights = self._weights(embeddings)
        self.table_ = self._profile(data.scores, weights, data.scores.mean(axis=0), self.prior)
        self._remember(data, weights)
        self.cost_model_ = ReplyCostModel(seed=self.seed).fit(
            data, embeddings, centroids=self.centroids_
        )
        return self

    def _remember(self, data: RoutingData, weights: np.ndarray) -> None:
        """Keep what `cf` onboarding needs of the training file, compactly: each query's key,
        every expert's outcome and log reply cost and its `top` regions with their weights
        (float16): 8 + 4 m + 4 top bytes per training query (MMLU-Pro: 0.60 MB for 8,368 × 13;
        the artifact grows from 0.11 to 0.71 MB)."""
        top = min(self.top, weights.shape[1])
        regions = np.argsort(-weights, axis=1, kind="stable")[:, :top]
        self.train_keys_ = query_keys(data.query_ids, data.prompts)
        self.train_scores_ = np.asarray(data.scores, dtype=np.float16)
        self.train_regions_ = regions.astype(np.int16)
        self.train_mix_ = np.take_along_axis(weights, regions, axis=1).astype(np.float16)
        self.train_log_reply_ = np.log(np.maximum(reply_costs_of(data), 1e-12)).astype(np.float16)

    def _training_weights(self) -> np.ndarray:
        """`(N, k)` the training queries' region weights, rebuilt from `_remember`'s."""
        assert self.train_regions_ is not None and self.train_mix_ is not None
        mix = self.train_mix_.astype(np.float64)
        weights = np.zeros((len(mix), len(self.centroids_)))
        np.put_along_axis(weights, self.train_regions_.astype(np.int64), mix, axis=1)
        return np.asarray(weights / weights.sum(axis=1, keepdims=True), dtype=np.float64)

    def _weights(self, embeddings: np.ndarray) -> np.ndarray:
        """`(n, k)` mixing weights over regions: softmax over the `top` most similar."""
        sim = np.asarray(embeddings, dtype=np.float64) @ self.centroids_.T.astype(np.float64)
        top = min(self.top, sim.shape[1])
        cut = -np.partition(-sim, top - 1, axis=1)[:, top - 1 : top]
        logits = np.where(
            sim >= cut, (sim - sim.max(axis=1, keepdims=True)) / self.temperature, -np.inf
        )
        w = np.exp(logits)
        return np.asarray(w / w.sum(axis=1, keepdims=True), dtype=np.float64)

    @staticmethod
    def _profile(
        scores: np.ndarray, weights: np.ndarray, prior: np.ndarray, strength: float
    ) -> np.ndarray:
        """`(k, m)` per-region mean score (soft counts), shrunk toward `prior` `(m,)` or
        `(k, m)` by `strength` pseudo-queries."""
        counts = weights.sum(axis=0)[:, None]
        sums = weights.T @ scores
        return np.asarray((sums + strength * prior) / (counts + strength), dtype=np.float64)

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        return np.asarray(self._weights(embeddings) @ self.table_, dtype=np.float64)

    def add_experts(self, data: RoutingData, embeddings: np.ndarray) -> ClusterRouter:
        """A copy of this router that also routes to the experts of `data` it does not know.

        `data` is a small profile (e.g. `coe profile`'s output, ≤ 100 queries are enough):
        scores and costs of the new experts (other columns are ignored) on queries embedded by
        `embeddings`. The existing experts' profiles and the regions stay as they are.
        """
        new = [j for j, m in enumerate(data.models) if m not in self.models_]
        if not new:
            raise OnboardingError(
                f"the profile has no expert beyond the router's {self.models_}: "
                "profile the new expert (`coe profile`) and pass that file"
            )
        if len(data) < 10:
            raise OnboardingError(
                f"{len(data)} profiled queries are too few to place a new expert; profile ≥ 10 "
                "(100 recommended)"
            )
        out = copy.deepcopy(self)
        weights = self._weights(embeddings)
        if self.onboard_costs not in ("cf", "pool", "own"):
            raise OnboardingError(
                f"unknown onboard_costs {self.onboard_costs!r}; choose 'cf', 'pool' or 'own'"
            )
        for j in new:
            column, imputed = self._new_column(data, j, embeddings, weights)
            out.table_ = np.concatenate([out.table_, column], axis=1)
            assert out.cost_model_ is not None and self.cost_model_ is not None
            out.cost_model_ = out.cost_model_.add_expert(data, j, embeddings)
            reply = None
            if self.onboard_costs == "cf":
                reply = self._cf_reply_costs(out.cost_model_, data, j)
            if self.onboard_costs == "pool" or (self.onboard_costs == "cf" and reply is None):
                self._pool_reply_costs(out.cost_model_, data, j, embeddings)
            if out.train_scores_ is not None and out.train_log_reply_ is not None:
                if reply is None:  # what the cost model now predicts on each training query
                    assert out.train_regions_ is not None
                    reply = out.cost_model_.table_[out.train_regions_[:, 0].astype(int), -1]
                out.train_scores_ = np.column_stack([out.train_scores_, imputed.astype(np.float16)])
                log_reply = np.log(np.maximum(reply, 1e-12)).astype(np.float16)
                out.train_log_reply_ = np.column_stack([out.train_log_reply_, log_reply])
            out.models_ = [*out.models_, data.models[j]]
            out.experts_ = [*out.experts_, *(e for e in data.experts if e.name == data.models[j])]
        return out

    def _new_column(
        self, data: RoutingData, j: int, embeddings: np.ndarray, weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(k, 1)` the region profile of new expert `data.models[j]` and `(N,)` its expected
        score on each remembered training query (empty for an artifact that keeps none)."""
        outcome = np.asarray(data.scores[:, j], dtype=np.float64)
        rows = self._matched_rows(data)
        if self.onboard == "cf" and (rows >= 0).sum() >= _MIN_MATCHED:
            return self._imputed_column(outcome, rows, weights)
        # `irt`, `regression`, or `cf` with a profile of questions the training file lacks
        prior = self._predicted_profile(embeddings, weights, outcome)
        column = self._profile(outcome[:, None], weights, prior[:, None], self.onboard_prior)
        if self.train_scores_ is None:
            return column, np.zeros(0)
        return column, self._training_weights() @ column[:, 0]

    def _imputed_column(
        self, outcome: np.ndarray, rows: np.ndarray, weights: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`cf` onboarding from the profiled queries that are training queries (`rows` ≥ 0):
        the newcomer's outcome on every training query, imputed (`impute_outcomes`) with the
        IRT profile of the query's region as prior and, as features, what the region does not
        explain of the existing experts' recorded outcomes on that query (their outcome minus
        their region's accuracy: the region's own pattern is in the prior already, and counting
        it twice made the profiles worse). The region profile is built from that column as
        `fit` builds one, then corrected per region by what the imputation missed on the
        profiled queries."""
        assert self.train_scores_ is not None
        seen = rows >= 0
        at, y = rows[seen], outcome[seen]
        train_weights = self._training_weights()
        m = self.table_.shape[1]
        residual = self.train_scores_[:, :m].astype(np.float64) - train_weights @ self.table_
        fit = (train_weights, residual)
        column, imputed = self._cf_estimate(fit, weights, outcome, at, y)
        if self.onboard_lcb > 0:
            column = column - self.onboard_lcb * self._cf_spread(fit, weights[seen], at, y)
        imputed[at] = y
        return np.clip(column[:, None], 0.0, 1.0), imputed

    def _cf_estimate(
        self,
        fit: tuple[np.ndarray, np.ndarray],
        weights: np.ndarray,
        outcome: np.ndarray,
        at: np.ndarray,
        y: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`(k,)` region profile and `(N,)` imputed outcomes of a newcomer whose outcomes `y`
        were seen on training rows `at`, the IRT prior fitted on `outcome` at `weights`; `fit`
        is the training queries' weights and the incumbents' residuals there."""
        train_weights, residual = fit
        offset = _logit(train_weights @ self._irt_profile(weights, outcome))
        impute = impute_twin if self.onboard_cf_model == "twin" else impute_outcomes
        imputed = impute(residual[at], offset[at], y, residual, offset, self.onboard_cf_c)
        column = self._profile(imputed[:, None], train_weights, imputed.mean(), self.prior)[:, 0]
        # what the imputation missed on the profiled queries corrects their regions, shrunk by
        # `onboard_prior` pseudo-queries as `irt` is (a newcomer unlike every existing expert
        # somewhere is seen there only through its own outcomes)
        w = train_weights[at]
        column += (w.T @ (y - imputed[at])) / (w.sum(axis=0) + self.onboard_prior)
        return column, imputed

    def _cf_spread(
        self, fit: tuple[np.ndarray, np.ndarray], weights: np.ndarray, at: np.ndarray, y: np.ndarray
    ) -> np.ndarray:
        """`(k,)` the bootstrap standard deviation of each region's `cf` estimate over
        `_LCB_RESAMPLES` resamples of the profile (seeded: the same profile, the same spread)."""
        rng = np.random.default_rng(self.seed)
        columns = []
        for _ in range(_LCB_RESAMPLES):
            i = rng.choice(len(y), len(y), replace=True)
            columns.append(self._cf_estimate(fit, weights[i], y[i], at[i], y[i])[0])
        return np.asarray(np.std(columns, axis=0), dtype=np.float64)

    def _matched_rows(self, data: RoutingData) -> np.ndarray:
        """`(n,)` the remembered training row of each profiled query, -1 where none."""
        return self._matched_rows_of(data.query_ids, data.prompts)

    def _matched_rows_of(self, query_ids: Sequence[str], prompts: Sequence[str]) -> np.ndarray:
        if self.train_keys_ is None:
            return np.full(len(query_ids), -1)
        index = {int(key): i for i, key in enumerate(self.train_keys_)}
        return np.array(
            [index.get(int(k), -1) for k in query_keys(query_ids, prompts)], dtype=np.int64
        )

    def _cf_reply_costs(
        self, model: ReplyCostModel, data: RoutingData, j: int
    ) -> np.ndarray | None:
        """Replace the new (last) column of `model` by the region means of the newcomer's reply
        cost imputed on every training query (`impute_reply_costs`, its own replies where it
        was profiled), and return that `(N,)` column; None (nothing changed) when fewer than
        `_MIN_MATCHED` profiled queries are training queries."""
        rows = self._matched_rows(data)
        seen = rows >= 0
        if seen.sum() < _MIN_MATCHED or self.train_log_reply_ is None:
            return None
        assert self.train_regions_ is not None
        m = self.table_.shape[1]
        known = self.train_log_reply_[:, :m].astype(np.float64)
        expert = model.experts_[-1]
        reply = np.maximum(
            data.costs[:, j] - prompt_tokens_of(data) * expert.input_price / 1e6, 0.0
        )[seen]
        imputed = impute_reply_costs(known[rows[seen]], reply, known)
        imputed[rows[seen]] = reply
        groups = self.train_regions_[:, 0].astype(np.int64)
        k = len(model.table_)
        sums = np.bincount(groups, weights=imputed, minlength=k)
        counts = np.bincount(groups, minlength=k).astype(np.float64)
        model.table_[:, -1] = (sums + model.shrink * imputed.mean()) / (counts + model.shrink)
        return imputed

    @staticmethod
    def _pool_reply_costs(
        model: ReplyCostModel, data: RoutingData, j: int, embeddings: np.ndarray
    ) -> None:
        """Replace the new (last) column of `model` by `onboard_reply_costs`: the existing
        experts' length pattern over regions at the newcomer's level, corrected per region."""
        expert = model.experts_[-1]
        reply = np.maximum(
            data.costs[:, j] - prompt_tokens_of(data) * expert.input_price / 1e6, 0.0
        )
        groups = model._rows(embeddings, len(data))
        model.table_[:, -1] = onboard_reply_costs(model.table_[:, :-1], groups, reply, model.shrink)

    def select_profile(
        self, embeddings: np.ndarray, n: int, method: str = "random", seed: int = 0
    ) -> np.ndarray:
        """Sorted indices of the `n` candidate queries (`embeddings`) to profile a new expert on
        before `add_experts` (`router.onboard.select_profile`: random, stratified, doptimal)."""
        irt = IrtTable(self.table_, self.onboard_rank) if "doptimal" in method else None
        weights = self._weights(embeddings)
        return select_profile(weights, n, method, np.random.default_rng(seed), irt)

    def select_training_profile(
        self,
        query_ids: Sequence[str],
        prompts: Sequence[str],
        n: int,
        method: str = "doptimal",
        seed: int = 0,
    ) -> np.ndarray:
        """Sorted indices of the `n` of these queries to profile a new expert on, chosen by
        `method` (`select_profile`) among those of them the router remembers from its training
        file (by id and prompt), with the region weights it remembers: what `coe profile
        --from-training FILE --select doptimal --base ROUTER` asks the newcomer."""
        if self.train_keys_ is None:
            raise OnboardingError(
                "this router artifact does not remember its training file (trained before "
                "`cf` onboarding): retrain it, or profile with `--select random`"
            )
        rows = self._matched_rows_of(query_ids, prompts)
        known = np.flatnonzero(rows >= 0)
        if len(known) == 0:
            raise OnboardingError(
                "none of these queries is one the router was trained on: pass its training file"
            )
        train_weights = self._training_weights()
        weights = train_weights[rows[known]]
        irt = IrtTable(self.table_, self.onboard_rank) if "doptimal" in method else None
        features = None
        if method == "doptimal-cf":
            assert self.train_scores_ is not None
            m = self.table_.shape[1]
            residual = self.train_scores_[:, :m].astype(np.float64) - train_weights @ self.table_
            features = residual[rows[known]]
        picked = select_profile(
            weights, n, method, np.random.default_rng(seed), irt, features, self.onboard_cf_c
        )
        return np.asarray(known[picked], dtype=np.int64)

    def _irt_profile(self, weights: np.ndarray, outcome: np.ndarray) -> np.ndarray:
        """`(k,)` the new expert's region profile by the low-rank IRT fit, with this router's
        onboarding options."""
        return onboard_profile(
            self.table_,
            weights,
            outcome,
            self.onboard_rank,
            self.onboard_strength,
            self.onboard_caution,
            self.onboard_ability,
            self.onboard_coupled,
        )

    def _predicted_profile(
        self, embeddings: np.ndarray, weights: np.ndarray, outcome: np.ndarray
    ) -> np.ndarray:
        """`(k,)` the new expert's expected score per region, from the existing experts'."""
        if self.onboard in ("irt", "cf"):  # cf without a remembered training file: its prior
            return self._irt_profile(weights, outcome)
        if self.onboard != "regression":
            raise OnboardingError(
                f"unknown onboarding model {self.onboard!r}; choose 'cf', 'irt' or 'regression'"
            )
        from sklearn.linear_model import LogisticRegression

        features = _logit(weights @ self.table_)
        region_features = _logit(self.table_)
        won = outcome >= 0.5
        if won.all() or not won.any():  # one class: no contrast to learn, only the base rate
            rate = float(np.clip(outcome.mean(), _EPS, 1 - _EPS))
            return np.full(len(region_features), rate)
        model = LogisticRegression(C=self.onboard_c, max_iter=1000).fit(features, won)
        return np.asarray(model.predict_proba(region_features)[:, 1], dtype=np.float64)
