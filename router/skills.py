"""Skill-based recruiting (Symbolic-MoE), with a learned skill taxonomy.

Symbolic-MoE describes each query by a few skills, measures every model's competence per skill
on validation data, and recruits the models whose profiles suit the query's skills. Here:

1. **Taxonomy.** `n_skills` skills are k-means centroids of the training queries' embeddings;
   each is named for humans by its most common task label and its most distinctive words.
2. **Query → skills.** A query's `top_skills` nearest skills (cosine), weighted by a softmax of
   the similarities with temperature `temperature`.
3. **Profiles.** `profiles_[s, j]` is model j's mean score over training queries mapped to skill s
   (each query counted with its skill weight), shrunk toward the model's overall mean by `prior`
   pseudo-queries.
4. **Recruiting.** A query's predicted quality for model j is the skill-weighted mean of its
   profiles; `recruit` returns the top k models.

`rank_aggregators` ranks experts for the aggregator role: the expert whose profile is strongest
on the query's skills aggregates best (Symbolic-MoE picks the aggregator by its measured ability
on the task at hand), with declared `aggregation`/`synthesis` skills as a tie-break bonus.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Self

import numpy as np

from router.base import Router, register
from router.data import RoutingData
from router.descriptor import ExpertDescriptor

__all__ = ["SkillsRouter", "rank_aggregators"]

_WORD = re.compile(r"[a-z][a-z]{3,}")
_AGGREGATION_SKILLS = {"aggregation", "synthesis", "summarization", "reasoning", "judge"}


def _skill_names(
    prompts: Sequence[str], tasks: Sequence[str | None], assign: np.ndarray, k: int
) -> list[str]:
    """Readable names: the dominant task plus the words most over-represented in the skill."""
    words_all: Counter[str] = Counter()
    per_skill: list[Counter[str]] = [Counter() for _ in range(k)]
    for prompt, s in zip(prompts, assign, strict=True):
        words = set(_WORD.findall(prompt.lower()[:400]))
        words_all.update(words)
        per_skill[s].update(words)
    names = []
    for s in range(k):
        members = [t for t, a in zip(tasks, assign, strict=True) if a == s and t]
        task = Counter(members).most_common(1)[0][0] if members else "skill"
        size = max(1, int((assign == s).sum()))
        lift = {w: c / size - words_all[w] / len(prompts) for w, c in per_skill[s].items()}
        top = sorted(lift, key=lambda w: -lift[w])[:2]
        names.append(f"{task}:{'/'.join(top)}" if top else f"{task}:{s}")
    return names


@register
class SkillsRouter(Router):
    """Predicted quality = skill-weighted mean of the models' per-skill profiles.

    Example::

        router = SkillsRouter(n_skills=48).fit(data, embeddings)
        router.recruit(query_embedding, k=3)      # the 3 best-suited experts
        rank_aggregators(router, query_embedding) # who should synthesise their answers
    """

    name = "skills"

    def __init__(
        self,
        n_skills: int = 48,
        top_skills: int = 3,
        temperature: float = 0.05,
        prior: float = 5.0,
        seed: int = 0,
    ) -> None:
        self.n_skills = n_skills
        self.top_skills = top_skills
        self.temperature = temperature
        self.prior = prior
        self.seed = seed

    def fit(self, data: RoutingData, embeddings: np.ndarray) -> Self:
        super().fit(data, embeddings)
        from sklearn.cluster import KMeans

        x = np.asarray(embeddings, dtype=np.float64)
        k = max(1, min(self.n_skills, len(data)))
        kmeans = KMeans(n_clusters=k, n_init=4, random_state=self.seed).fit(x)
        centroids = kmeans.cluster_centers_
        self.centroids_ = centroids / np.maximum(
            np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12
        )
        self.skills_ = _skill_names(data.prompts, data.tasks, kmeans.labels_, k)
        weights = self.skill_weights(x)  # (n, k)
        overall = data.scores.mean(axis=0)
        mass = weights.sum(axis=0)[:, None]
        self.profiles_ = (weights.T @ data.scores + self.prior * overall) / (mass + self.prior)
        return self

    def skill_weights(self, embeddings: np.ndarray) -> np.ndarray:
        """Each query's weight on each skill: softmax over its `top_skills` nearest, else 0."""
        sim = np.asarray(embeddings, dtype=np.float64) @ self.centroids_.T
        r = min(self.top_skills, sim.shape[1])
        top = np.argpartition(-sim, r - 1, axis=1)[:, :r]
        top_sim = np.take_along_axis(sim, top, axis=1)
        w = np.exp((top_sim - top_sim.max(axis=1, keepdims=True)) / self.temperature)
        w /= w.sum(axis=1, keepdims=True)
        out = np.zeros_like(sim)
        np.put_along_axis(out, top, w, axis=1)
        return np.asarray(out, dtype=np.float64)

    def query_skills(self, embedding: np.ndarray) -> list[tuple[str, float]]:
        """The skills one query needs, as `(name, weight)`, heaviest first."""
        w = self.skill_weights(np.atleast_2d(embedding))[0]
        return [(self.skills_[s], float(w[s])) for s in np.argsort(-w) if w[s] > 0]

    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray:
        return np.asarray(self.skill_weights(embeddings) @ self.profiles_, dtype=np.float64)

    def recruit(self, embedding: np.ndarray, k: int) -> list[str]:
        """The `k` experts best suited to one query, best first."""
        quality = self.score(np.atleast_2d(embedding), [""])[0]
        return [self.models_[j] for j in np.argsort(-quality, kind="stable")[:k]]


def rank_aggregators(
    router: SkillsRouter,
    embedding: np.ndarray,
    experts: Sequence[ExpertDescriptor] = (),
    bonus: float = 0.05,
) -> list[str]:
    """Experts of `router`'s pool ranked for aggregating answers to one query, best first.

    An expert declaring an aggregation-like skill (`aggregation`, `synthesis`, `summarization`,
    `reasoning`, `judge`) in its descriptor gets `bonus` added to its skill-profile quality.
    """
    quality = router.score(np.atleast_2d(embedding), [""])[0].copy()
    declared = {e.name: {s.lower() for s in e.skills} for e in experts}
    for j, name in enumerate(router.models_):
        if declared.get(name, set()) & _AGGREGATION_SKILLS:
            quality[j] += bonus
    return [router.models_[j] for j in np.argsort(-quality, kind="stable")]
