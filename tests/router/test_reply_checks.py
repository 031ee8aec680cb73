"""A reply's arithmetic, re-done (`router.reply_checks`), and the chains that read it.

- hand-checked replies: right steps pass (units, `$`, thousands, `%`, rounding, `x` and
  `\\times`, bullets, a running total written loosely), wrong steps are found, and what is
  not a step (variables, "2x", "350 000", a list) is not checked;
- hostile text (long runs of parentheses, operators, digits) takes linear time;
- a checked chain on a pool where a cheap expert's miscomputed replies agree with the other
  cheap one's wrong answer: learned from the training replies, it lets them escalate; the
  simulation on masked conclusions equals the live episode reading the reply texts.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from router.chain_search import simulate
from router.chain_select import _one_se, _pick
from router.chains import Chain, ChainEpisode, ChainRouter, answer_codes, suspect_replies
from router.data import RoutingData
from router.reply_checks import arithmetic, features, suspect
from tests.router.chain_pools import pair_pool

RIGHT = [
    ("16 eggs - 7 eggs used = 9 eggs, and 9 * $2 per egg = $18.", 2),
    ("3 eggs for breakfast + 4 eggs for muffins = 7 eggs per day", 1),
    ("x = $130,000 / 1.5 = $86,666.67", 1),
    ("3 + 4 = 7 + 2 = 9", 1),  # a running total: only "7 + 2 = 9" is a checkable step
    ("(16 - 7 = 9 eggs)", 1),
    ("2(3 + 4) = 14", 1),
    ("(3/12) * 100 = 25%", 1),
    ("1/3 = 33%", 1),
    ("50 * 20% = 10", 1),
    ("10/3 = 3.33 and 7 / 2 = 3", 2),
    ("2 + 3 * 4 = 20", 1),  # read left to right
    ("3 x 4 = 12", 1),
    ("2 \\times 3 = 6", 1),
    ("- 20 - 4 = 16 students", 1),  # a bullet, not a minus
    ("-5 + 3 = -2", 1),
    ("Total: 12\\n- 84/12 = 7", 1),  # a line break inside a JSON string ends the line
]
WRONG = [
    "So 12 + 15 = 28 apples.",
    "1234 + 5678 = 6902",
    "2 \\times 3 = 7",
    "0.5 * 10 = 6",
    "She pays 4 * $25 = $90 in total.",
]
NOT_STEPS = [
    "2x/3 - 2 = 10",  # a variable: "3 - 2 = 10" is not a step
    "1.5x = $130,000",
    "$350 000 * 0.05 = $17 500",  # a space as thousands separator
    "150/100 = 120cm / x",
    "The total is 5 apples and 3 pears = 8 fruits",
    "**Step 1:** 2 ** 3 = 8",
    "12 = 12",
]


@pytest.mark.parametrize(("text", "steps"), RIGHT)
def test_right_steps_pass(text: str, steps: int) -> None:
    assert arithmetic(text)[:2] == (steps, 0)
    assert not suspect(text)


@pytest.mark.parametrize("text", WRONG)
def test_wrong_steps_are_found(text: str) -> None:
    checked, wrong, _ = arithmetic(text)
    assert wrong == checked == 1 and suspect(text)


@pytest.mark.parametrize("text", NOT_STEPS)
def test_what_is_not_a_step_is_not_checked(text: str) -> None:
    assert arithmetic(text)[1] == 0


def test_features_of_a_reply() -> None:
    reply = '{"reasoning": "9 - 2 = 7, then 7 * 3 = 21", "answer": "21"}'
    f = features(reply, "21")
    assert (f.steps, f.wrong, f.ends_on_last_value, f.marker, f.boxed) == (2, 0, True, True, False)
    assert features(reply, "20").ends_on_last_value is False
    assert features("no steps \\boxed{3}", "3").ends_on_last_value is None


HOSTILE = [
    "(" * 200_000 + "1 + 1 = 3",
    "1 + " * 100_000 + "1 = 3",
    "1 = " * 100_000,
    "9" * 200_000 + " + 1 = 2",
    "- " * 200_000,
    "1 x " * 100_000,
    ("1 apples " * 5 + "+ ") * 20_000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: f"{t[:6]!r}x{len(t)}")
def test_the_check_is_fast_on_hostile_text(text: str) -> None:
    started = time.perf_counter()
    arithmetic(text)
    assert time.perf_counter() - started < 0.5


def _slipping_pool(n: int, seed: int) -> RoutingData:
    """`cheap-a` right 80% of the time with right steps; when wrong, a miscomputed step whose
    result is also `cheap-b`'s (wrong) answer, so their agreement is wrong exactly when
    `cheap-a`'s reasoning shows a slip. `strong` is always right, 100× dearer."""
    data = pair_pool(n, seed)
    rng = np.random.default_rng(seed + 7)
    assert data.responses is not None
    responses = data.responses.copy()
    scores = data.scores.copy()
    for i in range(n):
        if rng.random() < 0.8:
            responses[i, 0] = "3 + 4 = 7\n#### 7"
            scores[i, 0] = 1.0
        else:
            wrong = int(rng.integers(8, 100))
            responses[i, 0] = f"3 + 4 = {wrong}\n#### {wrong}"
            responses[i, 1] = f"Guessing.\n#### {wrong}"
            scores[i, :2] = 0.0
    return RoutingData(**{**data.__dict__, "responses": responses, "scores": scores})


def test_a_checked_chain_escalates_when_a_cheap_reply_miscomputes() -> None:
    data = _slipping_pool(400, 0)
    plain = ChainRouter(share=0.5, checks=False).fit(data, np.zeros((400, 1)))
    checked = ChainRouter(share=0.5).fit(data, np.zeros((400, 1)))
    assert checked.chain_.check and not plain.chain_.check
    assert checked.chain_.checks(0) and not checked.chain_.checks(len(checked.chain_.experts) - 1)
    cv_plain = {r["share"]: r["cv_accuracy"] for r in plain.cv_}[0.5]
    cv_checked = {r["share"]: r for r in checked.cv_}[0.5]
    assert "+" in cv_checked["family"]
    assert cv_checked["cv_accuracy"] > cv_plain + 0.05


def test_strict_check_needs_a_checked_step_that_gives_the_answer() -> None:
    assert not suspect("3 + 4 = 7\n#### 7", "strict", "7")
    assert suspect("3 + 4 = 7, so 8\n#### 8", "strict", "8")  # not the last value
    assert suspect("Seven.\n#### 7", "strict", "7")  # nothing checked
    assert suspect("3 + 4 = 8\n#### 8", "strict", "8")
    with pytest.raises(ValueError, match="unknown check"):
        suspect("x", "vibes")


@pytest.mark.parametrize(
    "chain",
    [
        Chain(("cheap-a", "cheap-b", "strong"), 2, check="arithmetic"),
        Chain(("cheap-a", "cheap-b", "strong"), 2, trust_from=2, check="arithmetic"),
        Chain(("cheap-a", "strong"), 1, check="arithmetic"),
        Chain(("cheap-b", "strong", "cheap-a"), 2, check="arithmetic"),  # cheap-a last: counts
        Chain(("cheap-a", "cheap-b", "strong"), 2, check="strict"),
        Chain(("cheap-b", "cheap-a", "strong"), 2),
    ],
)
def test_checked_simulation_equals_the_episode_reading_the_texts(chain: Chain) -> None:
    data = _slipping_pool(120, 1)
    assert data.responses is not None
    keys = answer_codes(data.responses, data.prompts, False)
    flags = suspect_replies(data.responses, data.prompts, False, chain.check or "arithmetic")
    assert flags[:, 0].any()
    rel = data.scores.mean(axis=0)
    index = {m: j for j, m in enumerate(data.models)}
    members = np.array([[index[e] for e in chain.experts]])
    needs = np.array([[chain.need(t) for t in range(len(chain.experts))]])
    sus = flags if chain.check else None
    sim_s, sim_c = simulate(keys, data.scores, data.costs, rel, members, needs, sus)
    for i in range(len(data)):
        ep = ChainEpisode(chain, dict(zip(data.models, map(float, rel), strict=True)))
        while (e := ep.next_expert()) is not None:
            ep.record(e, float(data.costs[i, index[e]]), data.responses[i, index[e]])
        assert data.scores[i, index[ep.answer_expert() or ""]] == sim_s[i, 0]
        assert ep.spent == pytest.approx(sim_c[i, 0])


def _held(per_fold: list[float]) -> tuple[float, float, list[float], float, np.ndarray]:
    acc = np.asarray(per_fold)
    return float(acc.mean()), 0.5, [0.5] * len(acc), 0.0, acc


def test_a_checked_configuration_does_not_move_the_plain_pick() -> None:
    """Plain X is noisy against the checked C (within one SE of it) but always 3 points below
    plain B: one flat one-SE comparison would pick X because C is there; the two-stage rule
    picks B among the plain ones, and C does not beat B by more than one SE."""
    x = [0.75, 0.95, 0.75, 0.95, 0.80]
    b = [v + 0.03 for v in x]
    c = [0.88] * 5
    held = [_held(x), _held(b), _held(c)]
    assert _one_se(held) == 0  # the flat rule: X
    assert _pick(held, [True, True, False]) == 1  # B
    assert _pick([_held(x), _held(b), _held([0.95] * 5)], [True, True, False]) == 2
