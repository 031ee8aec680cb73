"""Agreement chains on synthetic pools whose answer is known.

- two cheap experts with independent errors (a wrong reply is a random number): their agreement
  is reliable, so the learned chain is "both cheap, the strong one only when they disagree";
- the same pool with the cheap experts wrong together, with the same answer: agreement means
  nothing, and the chain falls back to the strong expert alone;
- the vectorised search and the live episode are one rule: every candidate simulated equals an
  episode run reply by reply, for every family (k = 1, 2, 3, and "agree, else trust"); the
  episode honours the budget, skips and exclusions;
- a trusting chain answers with its trusted expert's reply alone, and calls the fallback only
  when that reply concludes nothing; where two replies agree, a chain's last call is not
  streamed (its reply might not be the answer).
"""

from __future__ import annotations

import numpy as np
import pytest

from router.chain_search import agreeing, candidates, needs_of, simulate, trusting
from router.chains import FAMILIES, Chain, ChainEpisode, ChainRouter, conclusion
from router.data import RoutingData
from router.episodes import runs_episodes
from tests.router.chain_pools import pair_pool


def test_independent_cheap_pair_is_asked_first_and_escalates_on_disagreement() -> None:
    router = ChainRouter(share=0.5).fit(pair_pool(300, 0), np.zeros((300, 1)))
    assert router.chain_ == Chain(("cheap-a", "cheap-b", "strong"), 2)
    assert runs_episodes(router) and router.max_calls == 3
    cv = {r["share"]: r for r in router.cv_}
    # held out on the training file: about the strong expert's accuracy, at a third its cost
    assert cv[0.5]["cv_accuracy"] >= 0.99 and cv[0.5]["cv_cost_share"] < 0.45


def test_correlated_cheap_pair_is_not_trusted() -> None:
    router = ChainRouter(share=1.0).fit(pair_pool(300, 1, correlated=True), np.zeros((300, 1)))
    assert router.chain_ == Chain(("strong",), 1)


def test_fit_needs_recorded_replies() -> None:
    data = pair_pool(20, 0)
    data = RoutingData(**{**data.__dict__, "responses": None})
    with pytest.raises(ValueError, match="response"):
        ChainRouter().fit(data, np.zeros((20, 1)))


def _episode_scores(
    keys: np.ndarray,
    scores: np.ndarray,
    costs: np.ndarray,
    rel: np.ndarray,
    chain: np.ndarray,
    needs: np.ndarray,
    suspect: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    names = [str(j) for j in range(keys.shape[1])]
    members = tuple(names[j] for j in chain if j >= 0)
    got, spent = np.zeros(len(keys)), np.zeros(len(keys))
    check = "" if suspect is None else "arithmetic"
    for i in range(len(keys)):
        rel_ = dict(zip(names, map(float, rel), strict=True))
        ep = ChainEpisode(Chain.of(members, needs, check), rel_)
        while (e := ep.next_expert()) is not None:
            j = int(e)
            key = int(keys[i, j]) if keys[i, j] >= 0 else None
            ep.record_key(e, float(costs[i, j]), key, suspect is not None and bool(suspect[i, j]))
        got[i] = scores[i, int(ep.answer_expert() or 0)]
        spent[i] = ep.spent
    return got, spent


@pytest.mark.parametrize("checked", [False, True], ids=["plain", "checked"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_search_simulation_equals_the_live_episode(family: str, checked: bool) -> None:
    rng = np.random.default_rng(3)
    n, m = 60, 6
    keys = rng.integers(-1, 3, (n, m))  # few distinct answers: many agreements, some none
    scores = (keys == 0).astype(float)
    costs = rng.random((n, m)) * 1e-3
    rel = rng.random(m)
    # checked: a quarter of the replies are suspect (the trusted and last members' still count)
    suspect = rng.random((n, m)) < 0.25 if checked else None
    chains, ks = FAMILIES[family](m, rel)
    needs = needs_of(chains, ks)
    pick = rng.choice(len(chains), min(80, len(chains)), replace=False)
    sim_s, sim_c = simulate(keys, scores, costs, rel, chains[pick], needs[pick], suspect)
    for col, c in enumerate(pick):
        got, spent = _episode_scores(keys, scores, costs, rel, chains[c], needs[c], suspect)
        np.testing.assert_allclose(sim_s[:, col], got, err_msg=str(chains[c]))
        np.testing.assert_allclose(sim_c[:, col], spent)


def test_new_families_have_their_shape() -> None:
    rel = np.array([0.5, 0.6, 0.7, 0.9, 0.8])
    chains, needs = agreeing(5, 3, 4, rel)
    assert all((row[row >= 0][:3] == sorted(row[row >= 0][:3])).all() for row in chains)
    assert (needs[chains >= 0] == 3).all() and {int((row >= 0).sum()) for row in chains} == {3, 4}
    chains, needs = trusting(5, rel, 2)
    for row, need in zip(chains, needs, strict=True):
        members = [int(j) for j in row if j >= 0]
        chain = Chain.of(tuple(map(str, members)), need)
        assert chain.k == 2 and chain.trust_from in (2, 3)
        trusted = members[chain.trust_from]
        assert rel[trusted] > max(rel[j] for j in members[: chain.trust_from])
        assert len(members) - chain.trust_from <= 2  # at most one fallback after it
    with pytest.raises(ValueError, match="trusted tail"):
        Chain.of(("a", "b", "c"), (2, 1, 2))


def test_trusted_expert_answers_alone_and_the_fallback_only_without_a_conclusion() -> None:
    chain = Chain(("a", "b", "strong", "spare"), 2, trust_from=2)
    rel = {"a": 0.6, "b": 0.6, "strong": 0.9, "spare": 0.5}
    ep = ChainEpisode(chain, rel)
    for expert, text in (("a", "#### 1"), ("b", "#### 2"), ("strong", "#### 3")):
        assert ep.next_expert() == expert
        ep.record(expert, 0.0, text)
    assert ep.next_expert() is None and ep.answer_expert() == "strong"
    ep = ChainEpisode(chain, rel)
    for expert, text in (("a", "#### 1"), ("b", "#### 2"), ("strong", "I give up")):
        assert ep.next_expert() == expert
        ep.record(expert, 0.0, text)
    assert ep.next_expert() == "spare" and ep.last_call()
    ep.record("spare", 0.0, "#### 4")
    assert ep.answer_expert() == "spare"


def test_three_must_agree_and_a_shared_answer_is_not_streamed() -> None:
    ep = ChainEpisode(Chain(("a", "b", "c", "d"), 3), {"a": 0.5, "b": 0.5, "c": 0.6, "d": 0.9})
    for expert, text in (("a", "#### 1"), ("b", "#### 1"), ("c", "#### 2")):
        assert ep.next_expert() == expert and not ep.last_call()
        ep.record(expert, 0.0, text)
    assert ep.next_expert() == "d"
    assert not ep.last_call()  # d's lone reply would lose to a and b's shared one
    ep.record("d", 0.0, "#### 3")
    assert ep.next_expert() is None and ep.answer_expert() == "b"  # the most shared, latest


def test_rising_candidates_escalate_only_to_stronger_experts() -> None:
    rel = np.array([0.5, 0.6, 0.9, 0.8])
    chains, ks = candidates(4, 4, rel)
    for row, k in zip(chains, ks, strict=True):
        members = [int(j) for j in row if j >= 0]
        if k == 2 and len(members) > 2:
            floor = max(rel[members[0]], rel[members[1]])
            assert all(rel[j] > floor for j in members[2:])
            assert list(rel[members[2:]]) == sorted(rel[members[2:]])


def test_episode_keeps_the_budget_and_skips() -> None:
    chain = Chain(("a", "b", "c"), 2)
    rel = {"a": 0.7, "b": 0.8, "c": 0.95}
    ep = ChainEpisode(chain, rel, {"a": 1e-4, "b": 1e-4, "c": 1e-2}, budget=1e-3)
    assert ep.next_expert() == "a"
    ep.record("a", 1e-4, "#### 5")
    assert ep.next_expert() == "b"
    ep.record("b", 1e-4, "#### 6")  # disagree, but c does not fit what is left
    assert ep.next_expert() is None
    assert ep.answer_expert() == "b"  # last reply concludes: it answers
    ep2 = ChainEpisode(chain, rel)
    ep2.exclude({"b"})
    assert ep2.next_expert() == "a"
    with pytest.raises(ValueError, match="not the expert"):
        ep2.record("c", 0.0, "x")
    ep2.skip("a")
    assert ep2.next_expert() == "c" and ep2.last_call()
    ep2.record("c", 1e-2, "no conclusion here")
    assert ep2.answer_expert() == "c" and ep2.trace() is None


def test_fallback_is_the_most_reliable_concluding_reply() -> None:
    ep = ChainEpisode(Chain(("a", "b", "c"), 2), {"a": 0.6, "b": 0.9, "c": 0.7})
    for expert, text in (("a", "#### 1"), ("b", "#### 2"), ("c", "I cannot tell")):
        assert ep.next_expert() == expert
        ep.record(expert, 0.0, text)
    assert ep.next_expert() is None and ep.answer_expert() == "b"


def test_conclusion_reads_options_numbers_and_math() -> None:
    mc = "Which? (A) one (B) two (C) three (D) four"
    assert conclusion("The answer is (B)", mc) == "B"
    assert conclusion('{"reasoning": "…", "answer": "42"}', "How many?") == "42"
    assert conclusion("so \\boxed{\\frac{1}{2}}", "Find x.", math=True) == conclusion(
        "the answer is 0.5", "Find x.", math=True
    )
