"""coe's graders on hand-checked replies from the multi-model data (MMLU-Pro, ZeroEval)."""

from __future__ import annotations

import pytest

from training.grading import (
    grade_math,
    math_reply_answer,
    number_reply_answer,
    option_reply_answer,
)

# MMLU-Pro replies (shortened from shared/data/multimodel/mmlu_pro) and the letter each chose,
# read by hand.
MMLU_PRO = [
    ("The answer is (C).\n", "C"),
    (" ... or 21 cm. The answer is (G).\n\n", "G"),
    ("so the net ionic equation is therefore (E).\n\n", "E"),
    ("The answer is: A", "A"),
    ("Answer: J", "J"),
    # gemini-1.5-pro-002 restates the five examples' answers before its own: the last counts.
    (
        "The answer is (A).\nThe answer is (H).\nThe answer is (E).\nThe answer is (I).\n"
        "The answer is (B).\nThe answer is (F).\n",
        "F",
    ),
    ("The calculation gives 1.9e-15 per second. Total", None),
    ("The price of the bond is $74.875. The price of the bond is $74.875.", None),
]


@pytest.mark.parametrize(("reply", "letter"), MMLU_PRO)
def test_mmlu_pro_letter(reply: str, letter: str | None) -> None:
    assert option_reply_answer(reply) == letter


def test_mmlu_pro_letter_bounded_by_options() -> None:
    assert option_reply_answer("The answer is (H).", "ABCD") is None


@pytest.mark.parametrize(
    ("reply", "number"),
    [
        ('```json\n{\n "reasoning": "9 * 2 = 18",\n "answer": "18"\n}\n```', "18"),
        ('{"reasoning": "...", "answer": "$2,400"}', "2400"),
        ('{"reasoning": "1/4 * 100 = 25%", "answer": "25%"}', "25"),
        ('{"reasoning": "so 6 - 5 = 1", "answer": 1}', "1"),
        ("No JSON here; 3 + 4 = 7. The answer is 7.", "7"),
        ('{"reasoning": "unsure", "answer": "none"}', None),
    ],
)
def test_gsm8k_number(reply: str, number: str | None) -> None:
    assert number_reply_answer(reply) == number


@pytest.mark.parametrize(
    ("reply", "gold", "score"),
    [
        ('{"reasoning": "...", "answer": "\\frac{1}{2}"}', "0.5", 1.0),
        ('{"reasoning": "...", "answer": "\\\\dfrac{3}{4}"}', "\\frac34", 1.0),
        ('{"reasoning": "...", "answer": "-15"}', "-15", 1.0),
        ('{"reasoning": "...", "answer": "15"}', "-15", 0.0),
        ("Hence $\\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt3}{2}", 1.0),
        ('{"reasoning": "...", "answer": "x = 5"}', "5", 1.0),
        ('{"reasoning": "...", "answer": "1112112"}', "1112112_3", 1.0),
        ("I could not solve it.", "3", 0.0),
    ],
)
def test_math_grade(reply: str, gold: str, score: float) -> None:
    assert grade_math(reply, gold) == score


def test_math_vote_key() -> None:
    assert math_reply_answer('{"answer": "1/2"}') == math_reply_answer("$\\boxed{0.5}$") == "0.5"
    assert math_reply_answer("nothing") is None
