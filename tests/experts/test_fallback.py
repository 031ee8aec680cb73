"""Fallback order, bounds and what it records."""

from __future__ import annotations

from pathlib import Path

import pytest

from experts.engines import make_engine
from experts.errors import ExpertHTTPError, ExpertTimeout, ExpertUnavailable
from experts.fallback import AllExpertsFailed, ExpertRejected, call_with_fallback
from experts.health import HealthBoard
from experts.pool import ExpertConfig

pytestmark = pytest.mark.asyncio


def board(*names: str) -> HealthBoard:
    engines = {
        n: make_engine(ExpertConfig(name=n, engine="openai", base_url=f"http://{n}/v1"), Path("."))
        for n in names
    }
    return HealthBoard(engines, cooldown_s=60)


async def test_first_success_wins_and_failures_are_benched() -> None:
    health = board("a", "b", "c")

    async def call(expert: str) -> str:
        if expert == "a":
            raise ExpertUnavailable(expert, "refused")
        return f"answer from {expert}"

    expert, result, attempts = await call_with_fallback(["a", "b", "c"], call, health, 3)
    assert (expert, result) == ("b", "answer from b")
    assert [(a.expert, a.error) for a in attempts] == [("a", "refused"), ("b", None)]
    assert health.down() == {"a"}


async def test_attempts_are_bounded_and_all_timeouts_say_so() -> None:
    calls: list[str] = []

    async def call(expert: str) -> str:
        calls.append(expert)
        raise ExpertTimeout(expert, "slow")

    with pytest.raises(AllExpertsFailed) as info:
        await call_with_fallback(["a", "b", "c"], call, board("a", "b", "c"), 2)
    assert calls == ["a", "b"]
    assert info.value.timed_out
    assert "a (slow)" in str(info.value)


async def test_a_4xx_is_not_retried() -> None:
    async def call(expert: str) -> str:
        raise ExpertHTTPError(expert, 400, "bad prompt")

    with pytest.raises(ExpertRejected) as info:
        await call_with_fallback(["a", "b"], call, board("a", "b"), 3)
    assert [a.expert for a in info.value.attempts] == ["a"]
