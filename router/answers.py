"""Short answers out of long ones: the final number, the chosen option letter.

Voting, agreement-based early stopping and the graders of `coe profile` all compare answers by
what they conclude, not by how they are worded. One module, so the gateway votes exactly as the
profiler grades.

>>> extract_number("She makes 9 * $2 = $18 every day.\\n#### 18")
'18'
>>> extract_option("The answer is (C) because ...", "ABCD")
'C'
>>> normalise("The answer is 1,000.")
'1000'

Expert output is untrusted text that this module reads on the event loop, so every pattern runs
in time linear in its input (possessive quantifiers where whitespace runs meet optional
separators, which would otherwise backtrack cubically: "answer" and 800 spaces took 1.7 s), and
only the last `MAX_SCAN_CHARS` of an answer are read, where answers conclude.
"""

from __future__ import annotations

import re

from router.math_answers import MAX_SCAN_CHARS as _REPLY_TAIL
from router.math_answers import extract_json_answer, extract_math_answer, math_key

__all__ = [
    "MAX_SCAN_CHARS",
    "conclusion",
    "extract_marked_number",
    "extract_number",
    "extract_option",
    "math_reply_answer",
    "normalise",
    "number_reply_answer",
    "option_letters",
    "option_reply_answer",
]

#: Characters read from the end of an answer (its conclusion); the rest is not scanned.
MAX_SCAN_CHARS = 10_000

_NUM = r"(-?\$?\s?\d[\d,]*+(?:\.\d+)?)"
_NUMBER = re.compile(_NUM)
_FINAL_MARKERS = (
    re.compile(r"####\s*+" + _NUM),
    re.compile(r"\\boxed\{\s*+" + _NUM),
    re.compile(
        r"(?:final answer|the answer|answer)\s*+(?:is|:|=)?\s*+[:=]?\s*+" + _NUM, re.IGNORECASE
    ),
)


def _clean_number(raw: str) -> str | None:
    text = raw.replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    if not text or text == "-":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if value.is_integer():
        return str(int(value))
    return f"{value:.6g}"


def extract_marked_number(text: str) -> str | None:
    """The number after an explicit final-answer marker (`#### 18`, `\\boxed{18}`, "the answer
    is 18"), canonical, or None: whether an answer concludes in the format a math task asks
    for, which the RL router observes (`router.rl_answers`).
    """
    text = text[-MAX_SCAN_CHARS:]
    for marker in _FINAL_MARKERS:
        found = marker.findall(text)
        if found:
            cleaned = _clean_number(found[-1])
            if cleaned is not None:
                return cleaned
    return None


def extract_number(text: str) -> str | None:
    """The answer's final number, canonical (`'1000'`, `'2.5'`), or None when there is none.

    An explicit marker wins (GSM8K's `#### 18`, `\\boxed{18}`, "the answer is 18"); otherwise
    the last number in the text, where chains of reasoning put their result.
    """
    text = text[-MAX_SCAN_CHARS:]
    marked = extract_marked_number(text)
    if marked is not None:
        return marked
    for raw in reversed(_NUMBER.findall(text)):
        cleaned = _clean_number(raw)
        if cleaned is not None:
            return cleaned
    return None


def extract_option(text: str, letters: str = "ABCDEFGHIJ") -> str | None:
    """The option letter an answer chose, or None.

    Looked for in order: "answer is (C)" / "answer: C", a parenthesised `(C)`, a line that is
    just `C` or starts `C.`/`C)`; the last such mention counts (answers often restate options
    before concluding). `letters` bounds the valid options (`"ABCD"` for a 4-way question).
    """
    text = text[-MAX_SCAN_CHARS:]
    valid = re.escape(letters)
    patterns = (
        rf"answer\s*+(?:is|:)?\s*+:?\s*+\(?([{valid}])\)?(?![A-Za-z])",
        rf"\(([{valid}])\)",
        rf"(?m)^[ \t]*+\**+([{valid}])\**+[ \t]*+(?:[.):]|$)",
    )
    for pattern in patterns:
        found = re.findall(pattern, text, flags=re.IGNORECASE if pattern is patterns[0] else 0)
        if found:
            return str(found[-1]).upper()
    return None


def option_letters(question: str) -> str | None:
    """The option letters a multiple-choice question offers (`"ABCD"`), or None.

    Options are recognised as `(A) ... (B) ...` in the text, the form MMLU-Pro, GPQA and
    MedMCQA use; at least two consecutive letters from A are needed.
    """
    present = set(re.findall(r"\(([A-J])\)", question))
    letters = ""
    for letter in "ABCDEFGHIJ":
        if letter not in present:
            break
        letters += letter
    return letters if len(letters) >= 2 else None


def normalise(text: str, letters: str | None = None) -> str:
    """A comparable key for an answer: its option letter (when `letters` is given), else its
    final number, else its lowercased words without punctuation.

    Two answers agree when their keys are equal.
    """
    text = text[-MAX_SCAN_CHARS:]
    if letters:
        option = extract_option(text, letters)
        if option is not None:
            return option
    number = extract_number(text)
    if number is not None:
        return number
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


# -- a whole reply's conclusion, as the graders read it (and votes and chains compare) ---------


def number_reply_answer(reply: str) -> str | None:
    """A reply's final number, canonical: from its JSON `answer` field when it has one
    (ZeroEval's format), else by `extract_number` over the reply's tail."""
    field = extract_json_answer(reply)
    return extract_number(field if field is not None else reply[-_REPLY_TAIL:])


def math_reply_answer(reply: str) -> str | None:
    """A reply's final math answer as a vote key (`math_key`), or None when it states none."""
    answer = extract_math_answer(reply)
    return None if answer is None else math_key(answer)


def option_reply_answer(reply: str, letters: str = "ABCDEFGHIJ") -> str | None:
    """The option letter a reply chose (`extract_option` over its tail), or None."""
    return extract_option(reply[-_REPLY_TAIL:], letters)


def conclusion(reply: str, prompt: str, math: bool = False) -> str | None:
    """A reply's conclusion as the graders read it: the option letter of a multiple-choice
    prompt, the MATH answer (`math_key`) when `math`, else the final number; None when it
    states none."""
    letters = option_letters(prompt)
    if letters:
        return option_reply_answer(reply, letters)
    if math:
        return math_reply_answer(reply)
    return number_reply_answer(reply)
