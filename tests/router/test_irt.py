"""The IRT-smoothed neighbour router: difficulty × ability fitted on the training outcomes."""

from __future__ import annotations

import numpy as np

from router.irt import IRTRouter, fit_irt
from tests.router.pools import pool


def test_fit_irt_recovers_difficulty_and_ability() -> None:
    # Rasch data: logit p = ability_j − difficulty_i, 12 experts, 400 queries.
    rng = np.random.default_rng(0)
    difficulty = rng.normal(0, 1.5, 400)
    ability = np.linspace(-1.5, 1.5, 12)
    p = 1 / (1 + np.exp(-(ability[None, :] - difficulty[:, None])))
    y = (rng.random(p.shape) < p).astype(float)
    a, b, z = fit_irt(y, rank=1, l2=1.0, steps=500, lr=0.05, seed=0)
    assert np.corrcoef(a, ability)[0, 1] > 0.95
    trait = z[:, 0] * np.sign(b[:, 0].mean())  # the trait's sign is arbitrary
    assert np.corrcoef(trait, -difficulty)[0, 1] > 0.8


def test_irt_router_sends_each_topic_to_its_expert() -> None:
    data, x = pool(300, seed=0)
    test, xt = pool(60, seed=1)
    router = IRTRouter(rank=3, k=20).fit(data, x)
    quality = router.score(xt, test.prompts)
    assert quality.shape == (60, 4) and ((quality > 0) & (quality < 1)).all()
    topic = np.arange(len(test)) % 3
    picks = quality.argmax(axis=1)
    assert (picks[topic == 0] == 0).all() and (picks[topic == 1] == 1).all()
    assert (picks[topic == 2] == 3).all()
