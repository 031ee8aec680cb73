"""Load-aware routing: least-loaded rerouting within the quality tolerance, never otherwise."""

from __future__ import annotations

import numpy as np

from router.load import ExpertLoad
from router.policy import Policy

MODELS = ["a", "b", "c"]
QUALITY = np.array([0.70, 0.67, 0.50])
COST = np.array([1.0, 1.0, 1.0])
IDLE = ExpertLoad(queued=0, in_flight=0, resident=True, max_concurrency=2)
BUSY = ExpertLoad(queued=3, in_flight=2, resident=True, max_concurrency=2)
ASLEEP = ExpertLoad(queued=0, in_flight=0, resident=False)


def decide(load: dict[str, ExpertLoad], tolerance: float = 0.05, **kw: object) -> list[str]:
    d = Policy(load_tolerance=tolerance).decide(MODELS, QUALITY, COST, load=load, **kw)  # type: ignore[arg-type]
    return d.ranked


def test_an_expert_that_can_take_the_call_keeps_it() -> None:
    assert decide({"a": IDLE, "b": IDLE, "c": IDLE}) == ["a", "b", "c"]
    half = ExpertLoad(queued=0, in_flight=1, resident=True, max_concurrency=2)
    assert decide({"a": half, "b": IDLE, "c": IDLE}) == ["a", "b", "c"]


def test_a_saturated_first_choice_moves_to_the_least_loaded_within_tolerance() -> None:
    d = Policy(load_tolerance=0.05).decide(
        MODELS, QUALITY, COST, load={"a": BUSY, "b": IDLE, "c": IDLE}
    )
    assert d.ranked == ["b", "a", "c"] and d.rerouted_from == "a"
    # c is idle too, but 0.20 below a: outside the tolerance
    assert decide({"a": BUSY, "b": BUSY, "c": IDLE}) == ["a", "b", "c"]
    assert decide({"a": BUSY, "b": IDLE, "c": IDLE}, tolerance=0.2) == ["b", "a", "c"]
    assert decide({"a": BUSY, "b": IDLE, "c": IDLE}, tolerance=0.0) == ["a", "b", "c"]


def test_an_asleep_first_choice_yields_to_a_resident_one() -> None:
    assert decide({"a": ASLEEP, "b": IDLE, "c": IDLE}) == ["b", "a", "c"]
    # a busy resident still beats a wake: the call waits for a slot, not for a load
    assert decide({"a": ASLEEP, "b": BUSY, "c": IDLE}) == ["b", "a", "c"]


def test_among_sleepers_the_call_joins_the_batch_already_forming() -> None:
    forming = ExpertLoad(queued=5, in_flight=0, resident=False)
    assert decide({"a": ASLEEP, "b": forming, "c": IDLE}) == ["b", "a", "c"]
    # a saturated resident first choice is not moved to a sleeper
    assert decide({"a": BUSY, "b": forming, "c": BUSY}) == ["a", "b", "c"]


def test_unavailable_experts_are_never_rerouted_to() -> None:
    assert decide({"a": BUSY, "b": IDLE, "c": IDLE}, unavailable={"b"}) == ["a", "c", "b"]
