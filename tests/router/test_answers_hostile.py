"""Answer extraction runs on the event loop over text an expert wrote: it must take time linear
in the text and read a bounded amount of it, whatever the text is."""

from __future__ import annotations

import time

import pytest

from router.answers import (
    MAX_SCAN_CHARS,
    extract_marked_number,
    extract_number,
    extract_option,
    normalise,
)

HOSTILE = [
    "answer" + " " * 800,
    ("answer" + " " * 800) * 50,
    "answer is" + " \n" * 2000,
    "\n" * 20_000 + "x",
    "(" * 50_000,
    "####" + " " * 50_000,
    "\\boxed{" + " " * 50_000,
    "1," * 200_000,
    "x" * 1_000_000,
]


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: f"{t[:8]!r}x{len(t)}")
def test_every_extractor_is_fast_on_hostile_text(text: str) -> None:
    started = time.perf_counter()
    extract_marked_number(text)
    extract_number(text)
    extract_option(text, "ABCD")
    normalise(text, "ABCD")
    assert time.perf_counter() - started < 0.25


def test_the_scan_is_bounded_to_the_tail() -> None:
    # The conclusion of an answer is at its end: what comes before the tail is not read.
    head = "The answer is 7. " + "filler " * (MAX_SCAN_CHARS // 7 + 10)
    assert extract_number(head + "So the answer is 42.") == "42"
    assert extract_marked_number(head) is None


def test_extraction_still_reads_ordinary_answers() -> None:
    assert extract_number("She makes 9 * $2 = $18 every day.\n#### 18") == "18"
    assert extract_number("The final answer is: 1,000.") == "1000"
    assert extract_number("\\boxed{ 2.5 }") == "2.5"
    assert extract_option("The answer is (C) because ...", "ABCD") == "C"
    assert extract_option("Answer: b", "ABCD") == "B"
    assert extract_option("Thinking...\n  **D**.\n", "ABCD") == "D"
    assert normalise("The answer is 1,000.") == "1000"
