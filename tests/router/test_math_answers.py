"""MATH answers compared by meaning, on hand-checked pairs, and in time linear in the text."""

from __future__ import annotations

import time

import pytest

from router.math_answers import (
    extract_json_answer,
    extract_math_answer,
    last_boxed,
    math_equal,
    math_key,
    normalise_math,
)

# (model's final answer, gold): each pair checked by hand to mean the same.
SAME = [
    (r"\frac{1}{2}", "1/2"),
    (r"\frac{1}{2}", "0.5"),
    (r"\dfrac{1}{2}", r"\frac12"),
    (r"\tfrac{3}{4}", "0.75"),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}"),
    (r"\boxed{\boxed{7}}", "7"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"(3,\frac{\pi}{2})"),
    (r"\text{(C)}", "(C)"),
    (r"10^\circ", "10"),
    (r"10^{\circ}", "10°"),
    (r"\sqrt2", r"\sqrt{2}"),
    (r"5 \text{ cm}", "5"),
    ("12 dollars", "12"),
    (r"\$18.90", "18.9"),
    ("1,000", "1000"),
    ("x = 5", "5"),
    ("4.", "4"),
    ("0.50", r"\frac{1}{2}"),
    ("-.5", r"-\frac{1}{2}"),
    ("25\\%", "25"),
    (r"\frac{-220}{7}", "-220/7"),
    ("1112112_3", "1112112"),
    (r"2\sqrt{5}", r"2 \sqrt{5}"),
    (r"\frac 1 2", "0.5"),
    (r"\frac{7}2", "3.5"),
    (r"\frac7{2}", "3.5"),
    (r"x \in [2, 5]", r"x\in[2,5]"),
    ('"23"', "23"),
    ("1152 cups of flour", "1152"),
    ("64 + 37 + 11 = 112", "112"),
    ("y = 2x + 3", "y=2x+3"),
]

DIFFERENT = [
    (r"\frac{1}{3}", "0.33"),
    ("(1,2)", "1,2,"),
    (r"\sqrt{2}", "2"),
    ("15", "-15"),
    ("4300", "2040"),
    (r"\frac{2}{3}", r"\frac{3}{2}"),
    ("y = 2x + 3", "2x+4"),
    ("-10879, 10879", "10879"),
    (r"6\sqrt{2}", "6"),
]


@pytest.mark.parametrize(("answer", "gold"), SAME)
def test_same_answers_are_equal(answer: str, gold: str) -> None:
    assert math_equal(answer, gold)
    assert math_equal(gold, answer)


@pytest.mark.parametrize(("answer", "gold"), DIFFERENT)
def test_different_answers_are_not(answer: str, gold: str) -> None:
    assert not math_equal(answer, gold)


def test_missing_answer_equals_nothing() -> None:
    assert not math_equal(None, "3") and not math_equal("", "")


def test_vote_keys_group_equal_numbers() -> None:
    assert math_key(r"\frac{1}{2}") == math_key("0.5") == math_key("1/2") == "0.5"
    assert math_key(r"\frac{\pi}{2}") == r"\frac{\pi}{2}"


def test_boxed_keeps_nested_braces_and_takes_the_last() -> None:
    assert last_boxed(r"first \boxed{1} then \boxed{\frac{a}{b^{2}}} end") == r"\frac{a}{b^{2}}"
    assert last_boxed(r"\fbox{12}") == "12"
    assert last_boxed(r"unclosed \boxed{\frac{1}{2}") is None
    assert last_boxed("no box") is None


def test_json_answer_keeps_latex_backslashes() -> None:
    reply = '```json\n{\n  "reasoning": "a \\"quote\\"",\n  "answer": "\\frac{3}{4}"\n}\n```'
    assert extract_json_answer(reply) == r"\frac{3}{4}"
    assert extract_json_answer('{"answer": 42}') == "42"
    assert extract_json_answer('{"answer": "\\\\frac{1}{2}"}') == r"\frac{1}{2}"
    assert extract_json_answer("The answer is 5") is None


def test_math_answer_falls_back_to_boxed_then_answer_is() -> None:
    assert extract_math_answer(r"so $\boxed{-253}$") == "-253"
    assert extract_math_answer('{"answer": "$\\boxed{12}$"}') == "12"
    assert extract_math_answer("Thus the final answer is $7$.") == "7"
    assert extract_math_answer("no conclusion") is None


def test_normalise_drops_dollars_units_and_spaces() -> None:
    assert normalise_math(r"\$ 1{,}000") != ""
    assert normalise_math(r"\left[ 1, 2 \right)") == "[1,2)"
    assert normalise_math(r"\text{Devon}") == "Devon"


@pytest.mark.parametrize(
    "hostile",
    [
        "{" * 200_000,
        r"\boxed{" * 50_000,
        r"\text{" * 50_000 + "}" * 50_000,
        '"answer": "' + "\\" * 200_000,
        "1," * 100_000 + "x",
        r"\frac" * 50_000 + "1",
    ],
)
def test_hostile_text_is_fast(hostile: str) -> None:
    start = time.perf_counter()
    extract_math_answer(hostile)
    math_equal(hostile, hostile)
    math_key(hostile)
    assert time.perf_counter() - start < 1.0
