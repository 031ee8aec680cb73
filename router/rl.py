"""The RL router: routing as a sequence of decisions, trained by reinforcement learning.

Router-R1's idea on a CPU budget: an episode routes one query; at each step the policy calls an
expert or stops, and the reward is the final answer's score − λ·cost (`router.rl_env`). The
policy is a small network over the query embedding and each candidate's *descriptor* (prices,
parameter count, an embedding of its free-text description; `router.rl_net`), trained by
REINFORCE with a learned baseline (`router.rl_train`, which says why not PPO) on episodes
simulated from recorded benchmark outcomes. Because experts are seen only through descriptors, a
pool may contain experts the router never saw in training (`set_experts`).

Three ways to use it:

- `score(embeddings, queries)`: predicted quality per expert (the network's supervised head), so
  the RL router also works as a one-shot router under `Policy` and in `coe eval`;
- `plan(embedding, est_costs, ...)`: the multi-step plan (the experts the policy would call, in
  order, never past `budget`); `rollout` runs it over a recorded dataset for evaluation;
- `start(...)`: a live episode the gateway drives step by step (a cascade), and `learn(...)`,
  the contextual-bandit update from a client's feedback (`router.rl_online`).

Weights are numpy arrays; torch is imported only by `fit`.

Example::

    router = RLRouter(cost_weight=0.1, iterations=600).fit(data, embeddings)
    costs = router.predicted_costs(embeddings[:1], prompt_tokens[:1])[0]   # never realised
    router.plan(embeddings[0], costs, budget=1e-4)    # e.g. ["gemma-2-9b-it"]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from router.base import Router, register
from router.costs import prompt_tokens_of
from router.data import RoutingData
from router.descriptor import ExpertDescriptor
from router.rl_answers import ANSWER_FEATURES, RecordedAnswers, recorded_answers
from router.rl_env import EpisodeState, RecordedEnv, advance, new_state, observe, valid_actions
from router.rl_net import NetOutput, forward, quality_logits
from router.rl_prior import clip, fit_prior, logit, out_of_fold, pareto_shortlist
from router.rl_teacher import chain_teacher

if TYPE_CHECKING:
    from router.rl_online import LiveEpisode

__all__ = ["RLRouter", "descriptor_features", "parameter_count_b"]

#: What the policy may read about the query (`RLRouter.inputs`).
INPUTS = ("embedding", "prior", "both")

_SIZE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*-?\s*(b|billion)\b", re.IGNORECASE)


def parameter_count_b(expert: ExpertDescriptor) -> float | None:
    """Billions of parameters, read from the name (`llama-3.1-8b`) or the descriptor text."""
    for text in (expert.name.replace("-", " "), expert.descriptor):
        found = _SIZE.search(text)
        if found:
            return float(found.group(1))
    return None


def _embed_descriptors(texts: list[str], kind: str) -> np.ndarray:
    if kind == "hashing":
        from router.embedder import HashingEmbedder

        return HashingEmbedder(dim=32).embed(texts)
    if kind == "minilm":
        from router.embedder import load_embedder

        return load_embedder(cache_dir=None).embed(texts)
    raise ValueError(f"descriptor_embedder must be 'minilm' or 'hashing', not {kind!r}")


def descriptor_features(experts: Sequence[ExpertDescriptor], kind: str) -> np.ndarray:
    """`(m, f)`: the descriptor text's embedding, log prices, log size (+ known flag), context."""
    texts = [e.descriptor or e.name for e in experts]
    vectors = _embed_descriptors(texts, kind)
    rows = []
    for e, v in zip(experts, vectors, strict=True):
        size = parameter_count_b(e)
        extra = [
            math.log1p(e.input_price),
            math.log1p(e.output_price),
            math.log(size) / 4.0 if size else 0.0,
            1.0 if size else 0.0,
            math.log(max(e.context_length, 1)) / 10.0,
        ]
        rows.append(np.concatenate([np.asarray(v, dtype=np.float64), extra]))
    return np.stack(rows)


@register
class RLRouter(Router):
    """A descriptor-conditioned policy trained by REINFORCE on simulated routing episodes.

    `cost_weight` is the λ trained most and used when a request names none;
    `cost_weight_range` the λ the policy learns to handle besides. `run_dir`, when set, gets
    checkpoints (`checkpoint_<iteration>.npz`), `history.json` and `learning_curve.png`.
    `validation` > 0 holds out that share of the training queries and keeps the parameters
    whose greedy return on them is best, checked every `validate_every` iterations (early
    stopping against overfitting on small datasets; `router.rl_train`).

    `inputs` is what the policy reads about the query: "embedding" (the MiniLM embedding, as
    before), "prior" (instead, the out-of-fold predicted quality of each expert by a one-shot
    router of family `prior_router`, `router.rl_prior`: m numbers that generalise where 384
    are memorised) or "both". With a prior, each expert's prediction and its margin over the
    best expert called so far are also per-expert observations. `experts` "pareto" lets the
    policy call only the experts on the training file's accuracy–cost front.
    `answer_key` is how an answer's conclusion is read for its features (`router.rl_answers`;
    "conclusion": as the graders read it, the default with a chain warm start or hint;
    "normalise", the default otherwise, as before). `warm_start` "chain" first trains the policy for
    `bc_iterations` to imitate the best agreement chain for each episode's λ
    (`router.rl_teacher`), then runs REINFORCE from there; with `hint` the policy also
    observes, at every step, what that chain would do next (served too: it is computed from
    the episode's state), so following the chain is easy and REINFORCE learns when to leave it.
    """

    name = "rl"

    def __init__(
        self,
        cost_weight: float = 0.1,
        max_calls: int = 3,
        hidden: int = 64,
        iterations: int = 600,
        batch_size: int = 512,
        lr: float = 3e-3,
        entropy: float = 0.02,
        cost_weight_range: tuple[float, float] = (0.003, 3.0),
        descriptor_embedder: str = "minilm",
        run_dir: str | None = None,
        checkpoint_every: int = 100,
        seed: int = 0,
        progress: bool = True,
        validation: float = 0.0,
        validate_every: int = 25,
        inputs: str = "embedding",
        prior_router: str = "knn",
        prior_params: dict[str, Any] | None = None,
        prior_folds: int = 5,
        experts: str = "all",
        answer_key: str | None = None,
        warm_start: str = "none",
        bc_iterations: int = 200,
        hint: bool = False,
    ) -> None:
        self.cost_weight = cost_weight
        self.max_calls = max_calls
        self.hidden = hidden
        self.iterations = iterations
        self.batch_size = batch_size
        self.lr = lr
        self.entropy = entropy
        self.cost_weight_range = cost_weight_range
        self.descriptor_embedder = descriptor_embedder
        self.run_dir = run_dir
        self.checkpoint_every = checkpoint_every
        self.seed = seed
        self.progress = progress
        self.validation = validation
        self.validate_every = validate_every
        self.inputs = inputs
        self.prior_router = prior_router
        self.prior_params = prior_params
        self.prior_folds = prior_folds
        self.experts = experts
        self.answer_key = answer_key
        self.warm_start = warm_start
        self.bc_iterations = bc_iterations
        self.hint = hint

    # -- training ---------------------------------------------------------------------------

    def fit(
        self,
        data: RoutingData,
        embeddings: np.ndarray,
        answer_features: np.ndarray | None = None,
    ) -> Self:
        """Train on episodes simulated from `data`.

        The policy observes answer features when there are any: `answer_features` `(n, m, k)`
        when given, else those `router.rl_answers` derives from `data.responses` (length,
        format, agreement), which the gateway's cascade computes the same way from live answers.
        """
        from router.rl_train import TrainConfig, plot_learning_curve, train_policy

        if self.inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {INPUTS}, not {self.inputs!r}")
        if self.experts not in ("all", "pareto"):
            raise ValueError(f"experts must be 'all' or 'pareto', not {self.experts!r}")
        super().fit(data, embeddings)
        experts = list(data.experts) or [ExpertDescriptor(m, 0.0, 0.0) for m in data.models]
        self.trained_experts_ = {e.name: e for e in experts}
        features = descriptor_features(experts, self.descriptor_embedder)
        self.trained_features_ = {e.name: features[j] for j, e in enumerate(experts)}
        self.expert_matrix_ = features
        assert self.cost_scale_ is not None
        if self.warm_start not in ("none", "chain"):
            raise ValueError(f"warm_start must be 'none' or 'chain', not {self.warm_start!r}")
        tasks = [t for t in data.tasks if t]
        #: Whether answers are read as MATH answers (every training task is a MATH one).
        self.math_ = bool(tasks) and all(t.lower().startswith("math") for t in tasks)
        chained = self.warm_start == "chain" or self.hint
        self.answer_key_ = self.answer_key or ("conclusion" if chained else "normalise")
        answers = None
        if answer_features is None and data.responses is not None:
            answers = self.recorded_answers(data)
        prior = self._fit_prior(data, embeddings)
        allowed = pareto_shortlist(data.scores, data.costs) if self.experts == "pareto" else None
        #: The experts the policy may call (None: all, and any expert a live pool adds).
        self.shortlist_: list[str] | None = (
            None if allowed is None else [m for m, a in zip(data.models, allowed, strict=True) if a]
        )
        env = RecordedEnv(
            data.scores,
            data.costs,
            self.cost_scale_,
            self.max_calls,
            answer_features,
            answers,
            predicted_costs=self.predicted_costs(embeddings, prompt_tokens_of(data)),
            prior=prior,
            allowed=allowed,
        )
        self.n_answer_features_ = env.n_answer_features
        #: The features' names when they come from responses (the gateway computes them live);
        #: empty when there are none or they were given as an array.
        self.answer_feature_names_: tuple[str, ...] = ANSWER_FEATURES if answers else ()
        cfg = TrainConfig(
            hidden=self.hidden,
            iterations=self.iterations,
            batch_size=self.batch_size,
            lr=self.lr,
            entropy=self.entropy,
            cost_weight=self.cost_weight,
            cost_weight_range=tuple(self.cost_weight_range),  # type: ignore[arg-type]
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
            progress=self.progress,
            validation=self.validation,
            validate_every=self.validate_every,
            bc_iterations=self.bc_iterations if self.warm_start == "chain" else 0,
        )
        run_dir = Path(self.run_dir) if self.run_dir else None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)

        def checkpoint(iteration: int, params: dict[str, np.ndarray]) -> None:
            if run_dir is not None:
                np.savez(run_dir / f"checkpoint_{iteration:05d}.npz", **params)  # type: ignore[arg-type]

        teacher = None
        if chained:
            if answers is None:
                raise ValueError("a chain warm start needs recorded responses (data.responses)")
            if self.answer_key_ != "conclusion":
                raise ValueError("chains read conclusions: use answer_key 'conclusion'")
            teacher = chain_teacher(answers.keys, data.scores, data.costs, self.cost_scale_,
                                    allowed, self.max_calls)  # fmt: skip
        #: The chains whose next step the policy observes (None without `hint`), in
        #: trained order and in the current pool's.
        self.teacher_ = teacher if self.hint else None
        self.pool_teacher_ = self.teacher_
        self.teacher_models_ = list(data.models)
        env.teacher = self.teacher_
        x = self._stack(np.asarray(embeddings, dtype=np.float64), prior)
        self.params_, self.history_ = train_policy(x, features, env, cfg, checkpoint, teacher)
        self.online_: dict[str, np.ndarray] = {}
        self.online_updates_ = 0
        if run_dir is not None:
            (run_dir / "history.json").write_text(json.dumps(self.history_))
            plot_learning_curve(self.history_, run_dir / "learning_curve.png")
        return self

    def recorded_answers(self, data: RoutingData) -> RecordedAnswers:
        """The answer features of `data`'s recorded responses, read as this router reads them
        (training, `coe eval` and the served cascade alike)."""
        if data.responses is None:
            raise ValueError("the data records no responses")
        key = getattr(self, "answer_key_", "normalise")
        return recorded_answers(data.responses, data.prompts, key, getattr(self, "math_", False))

    def _fit_prior(self, data: RoutingData, embeddings: np.ndarray) -> np.ndarray | None:
        """Out-of-fold predictions for training, and the router that predicts when serving."""
        self.prior_router_: Router | None = None
        self.prior_models_: list[str] = []
        if self.inputs == "embedding":
            return None
        params = dict(self.prior_params or {})
        prior = out_of_fold(self.prior_router, params, data, embeddings, self.prior_folds,
                            self.seed)  # fmt: skip
        self.prior_router_ = fit_prior(self.prior_router, params, data, embeddings)
        self.prior_models_ = list(data.models)
        return prior

    def _stack(self, embeddings: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
        mode = getattr(self, "inputs", "embedding")
        if mode == "embedding" or prior is None:
            return embeddings
        if mode == "prior":
            return logit(prior)
        return np.concatenate([embeddings, logit(prior)], axis=1)

    def network_input(
        self, embeddings: np.ndarray, queries: Sequence[str] | None = None
    ) -> np.ndarray:
        """What the network reads about each query: the embedding, or (`inputs`) the prior
        router's predicted quality per trained expert as logits, or both side by side."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        prior_router = getattr(self, "prior_router_", None)
        if prior_router is None:
            return x
        texts = list(queries) if queries is not None else [""] * len(x)
        prior = np.asarray(prior_router.score(x, texts), dtype=np.float64)
        return self._stack(x, clip(prior))

    def _pool_prior(self, x: np.ndarray) -> np.ndarray | None:
        """`(b, m)` the prior in the current pool's order, from the network input `x`; an
        expert the prior router never saw gets 0.5."""
        trained = getattr(self, "prior_models_", [])
        if not trained:
            return None
        p = 1.0 / (1.0 + np.exp(-x[:, -len(trained) :]))
        index = {name: j for j, name in enumerate(trained)}
        out = np.full((len(x), len(self.models_)), 0.5)
        for j, name in enumerate(self.models_):
            if name in index:
                out[:, j] = p[:, index[name]]
        return out

    def _allowed(self) -> np.ndarray | None:
        shortlist = getattr(self, "shortlist_", None)
        if shortlist is None:
            return None
        return np.array([m in shortlist for m in self.models_], dtype=bool)

    @property
    def observes_answers(self) -> bool:
        """Whether the policy was trained on answer features derived from response text (so
        evaluation and serving must compute them; pickles from before this existed: no)."""
        return bool(getattr(self, "answer_feature_names_", ()))

    def episode(
        self,
        embedding: np.ndarray | None,
        est_costs: np.ndarray,
        *,
        question: str = "",
        cost_weight: float | None = None,
        budget: float | None = None,
        explore: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> LiveEpisode:
        """A live episode of this policy (`router.episodes.EpisodeRouter`)."""
        from router.rl_online import LiveEpisode

        if embedding is None:
            raise ValueError("an rl episode needs the query's embedding")
        return LiveEpisode(self, embedding, est_costs, cost_weight, budget, explore, rng, question)

    # -- the pool ---------------------------------------------------------------------------

    def set_experts(self, experts: Sequence[ExpertDescriptor]) -> Self:
        """Route over `experts`: ones seen in training keep their trained descriptor features,
        new ones are described by their own descriptor (prices, size, text)."""
        new = [e for e in experts if e.name not in self.trained_features_]
        fresh = descriptor_features(new, self.descriptor_embedder) if new else None
        rows = []
        for e in experts:
            if e.name in self.trained_features_:
                rows.append(self.trained_features_[e.name])
            else:
                assert fresh is not None
                rows.append(fresh[new.index(e)])
        self.models_ = [e.name for e in experts]
        self.experts_ = list(experts)
        self.expert_matrix_ = np.stack(rows) if rows else np.zeros((0, 0))
        teacher = getattr(self, "teacher_", None)
        if teacher is not None:
            self.pool_teacher_ = teacher.for_pool(self.teacher_models_, self.models_)
        return self

    def check_pool(self, experts: Sequence[ExpertDescriptor]) -> None:
        """Adopt the live pool (see `set_experts`): the RL router scores any expert it has a
        descriptor for, so unlike the other families it never refuses a pool."""
        self.set_experts(experts)

    def new_experts(self) -> list[str]:
        """Experts of the current pool that training never saw."""
        return [m for m in self.models_ if m not in self.trained_features_]

    # -- inference --------------------------------------------------------------------------

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """The network's parameters with online feedback updates applied."""
        return {**self.params_, **self.online_}

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        x = self.network_input(embeddings, queries)
        logits, _ = quality_logits(self.weights, x, self.expert_matrix_, _numpy())
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)

    def step(
        self, x: np.ndarray, est_costs: np.ndarray, state: EpisodeState
    ) -> tuple[NetOutput, np.ndarray]:
        """The network's output for `state` and the valid-action mask; `x` `(b, d)` is the
        network input (`network_input`)."""
        mask = valid_actions(state, est_costs, self.max_calls, self._allowed())
        assert self.cost_scale_ is not None
        teacher = getattr(self, "pool_teacher_", None)
        hint = None if teacher is None else teacher.hint(state)
        glob, dyn = observe(state, est_costs, self.cost_scale_, self.max_calls,
                            self._pool_prior(x), hint)  # fmt: skip
        out = forward(self.weights, np.asarray(x, dtype=np.float64), self.expert_matrix_, glob,
                      dyn, mask)  # fmt: skip
        return out, mask

    def rollout(
        self,
        embeddings: np.ndarray,
        env: RecordedEnv,
        rows: np.ndarray,
        cost_weight: float,
        budget: float | None = None,
    ) -> EpisodeState:
        """Greedy episodes on recorded queries `rows` of `env` (for evaluation)."""
        state = env.reset(rows, cost_weight, budget)
        x = self.network_input(np.asarray(embeddings, dtype=np.float64)[rows])
        for _ in range(self.max_calls + 1):
            if state.done.all():
                break
            out, _ = self.step(x, env.est_costs(), state)
            state, _ = env.step(state, np.asarray(out.logits.argmax(axis=1)))
        return state

    def plan(
        self,
        embedding: np.ndarray,
        est_costs: np.ndarray,
        cost_weight: float | None = None,
        budget: float | None = None,
    ) -> list[str]:
        """Experts the policy would call for one query, in order, assuming each call costs its
        estimate; the total never exceeds `budget`. Empty when no expert is affordable."""
        lam = self.cost_weight if cost_weight is None else cost_weight
        costs = np.asarray(est_costs, dtype=np.float64)[None, :]
        state = new_state(1, len(self.models_), self.n_answer_features_, lam, budget)
        calls: list[str] = []
        x = self.network_input(np.asarray(embedding)[None, :])
        for _ in range(self.max_calls + 1):
            out, _ = self.step(x, costs, state)
            action = int(out.logits[0].argmax())
            if action >= len(self.models_):
                break
            calls.append(self.models_[action])
            state = advance(state, np.array([action]), costs[:, action])
        return calls


def _numpy() -> Any:
    from router.rl_net import NUMPY_OPS

    return NUMPY_OPS
