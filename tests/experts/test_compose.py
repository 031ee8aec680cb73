"""The composition engine over a plain calling function: deadline, failures, early stop."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from experts.compose import Budget, Composition, CompositionFailed, Reply
from experts.compose.base import Call
from experts.errors import ExpertHTTPError, ExpertTimeout

ASK = [{"role": "user", "content": "What is 6 * 7?"}]


def scripted(answers: dict[str, str | Exception | float]) -> Call:
    """A `Call`: text answers, raised errors, or a float = seconds to hang before '42'."""

    async def call(expert: str, messages: list[dict[str, Any]]) -> Reply:
        answer = answers[expert]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, float):
            await asyncio.sleep(answer)
            answer = "42"
        return Reply(answer, prompt_tokens=5, completion_tokens=2, cost_usd=0.001)

    return call


def free(expert: str, messages: list[dict[str, Any]]) -> float:
    return 0.0


async def test_the_deadline_cancels_slow_experts_and_keeps_the_rest() -> None:
    call = scripted({"fast": "42", "slow": 30.0, "also": "42"})
    composition = Composition(call, Budget.within(0.3), free)
    started = time.monotonic()
    outcome = await composition.run("vote", ["fast", "slow", "also"], ASK)
    assert time.monotonic() - started < 2
    slow = outcome.answers[1]
    assert slow.timed_out and slow.error == "the composition's deadline passed"
    assert outcome.votes == {"42": 2} and outcome.text == "42"


async def test_failures_are_recorded_and_all_failing_raises() -> None:
    call = scripted({"a": ExpertHTTPError("a", 500, "boom"), "b": ExpertTimeout("b", "no answer")})
    composition = Composition(call, Budget.within(5), free)
    with pytest.raises(CompositionFailed) as info:
        await composition.run("aggregate", ["a", "b"], ASK, aggregator="a")
    assert [a.expert for a in info.value.answers] == ["a", "b"]
    assert not info.value.timed_out
    assert "a (HTTP 500: boom)" in str(info.value)


async def test_aggregate_leaves_the_final_call_to_the_caller() -> None:
    call = scripted({"a": "41", "b": "42"})
    composition = Composition(call, Budget.within(5, max_cost_usd=1.0), free)
    outcome = await composition.run("aggregate", ["a", "b"], ASK, aggregator="b")
    assert outcome.final_call is not None
    expert, messages = outcome.final_call
    assert expert == "b" and "[1] 41" in str(messages[0]["content"]) and messages[1:] == ASK
    assert composition.budget.spent_usd == pytest.approx(0.002)


async def test_unknown_strategy_is_refused() -> None:
    composition = Composition(scripted({}), Budget.within(5), free)
    with pytest.raises(ValueError, match="unknown strategy"):
        await composition.run("debate", ["a"], ASK)


async def test_a_vote_counts_each_expert_by_its_weight() -> None:
    call = scripted({"strong": "42", "weak1": "41", "weak2": "41"})
    plain = await Composition(call, Budget.within(5), free).run(
        "vote", ["strong", "weak1", "weak2"], ASK
    )
    assert plain.text == "41"  # two against one
    weights = {"strong": 5.0, "weak1": 2.0, "weak2": 2.0}
    weighted = await Composition(call, Budget.within(5), free).run(
        "vote", ["strong", "weak1", "weak2"], ASK, weights=weights
    )
    assert weighted.text == "42" and weighted.expert == "strong"
    assert weighted.votes == {"42": 1, "41": 2}  # the counts are still reported as counts
