"""Math answers compared by meaning: `\\frac{1}{2}` = `1/2` = `0.5`, `\\boxed{}` unwrapped.

Graders (`coe data import`) and serving (vote, cascade) compare a model's final math answer with
another answer through one function, `math_equal`, so an offline vote counts agreement exactly as
the grader counts correctness. The normalisation follows the MATH benchmark's (Hendrycks et al.)
`strip_string`, extended with numeric comparison.

Everything here runs in time linear in the text: the regular expressions have no nested or
adjacent overlapping quantifiers, braces are matched by one left-to-right scan, and the scanned
text is bounded to its last `MAX_SCAN_CHARS` characters (final answers sit at the end).

>>> math_equal("\\\\boxed{\\\\dfrac{1}{2}}", "0.5")
True
>>> normalise_math("\\\\left( 3, \\\\frac{\\\\pi}{2} \\\\right)")
'(3,\\\\frac{\\\\pi}{2})'
>>> extract_json_answer('```json\\n{"reasoning": "...", "answer": "\\\\frac{3}{4}"}\\n```')
'\\\\frac{3}{4}'
"""

from __future__ import annotations

import math
import re

__all__ = [
    "MAX_SCAN_CHARS",
    "extract_json_answer",
    "extract_math_answer",
    "last_boxed",
    "math_equal",
    "math_key",
    "math_value",
    "normalise_math",
]

#: Only this many characters at the end of a reply are scanned for its final answer.
MAX_SCAN_CHARS = 4000

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|mathrm|mbox|mathbf)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\q?quad")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree")
_FRAC_SHORT = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_HALF = re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d)")
_FRAC_FIRST = re.compile(r"\\frac\s*(\d)\s*\{([^{}]*)\}")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_BASE_SUBSCRIPT = re.compile(r"^(-?\d+)_\{?\d+\}?$")
_INT_SLASH = re.compile(r"^(-?\d+)/(\d+)$")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_NUMBER = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?$")
_FRAC_NUMBERS = re.compile(r"^(-?)\\frac\{(-?\d+(?:\.\d+)?)\}\{(-?\d+(?:\.\d+)?)\}$")
_NUMBER_WORDS = re.compile(r"^(-?\d[\d,]*(?:\.\d+)?)\s+[A-Za-z][A-Za-z ]{0,60}$")
_ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*:?\s*([^\n]{1,200})", re.IGNORECASE)
_UNIT_WORDS = re.compile(
    r"(?:dollars?|cents?|units?|degrees?|inches?|feet|foot|meters?|cm|km|miles?|hours?|"
    r"minutes?|seconds?|days?|weeks?|years?|square|sq|cubic|mph|percent)$"
)


def _tail(text: str) -> str:
    return text[-MAX_SCAN_CHARS:]


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The contents of the `{...}` group opening at `text[start]` (nested braces kept) and the
    index after it, or None when `text[start]` is not `{` or the group never closes."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for i in range(start, len(text)):
        char = text[i]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return None


def last_boxed(text: str) -> str | None:
    """The contents of the last `\\boxed{...}` (or `\\fbox{...}`), nested braces kept, or None.

    >>> last_boxed("so $\\\\boxed{\\\\frac{1}{2}}$.")
    '\\\\frac{1}{2}'
    """
    tail = _tail(text)
    at = max(tail.rfind(cmd) for cmd in _BOX_COMMANDS)
    if at < 0:
        return None
    start = at + len("\\boxed") if tail.startswith("\\boxed", at) else at + len("\\fbox")
    while start < len(tail) and tail[start] == " ":
        start += 1
    if start < len(tail) and tail[start] == "{":
        group = _braced(tail, start)
        return None if group is None else group[0]
    # `\boxed 5`: the token up to the next space or `$`.
    rest = tail[start:].split("$", 1)[0].strip()
    return rest.split(" ", 1)[0] if rest else None


def _json_string(text: str, start: int) -> str | None:
    """The JSON string literal opening at `text[start]` (a `"`), decoded leniently.

    Models write LaTeX into JSON without escaping its backslashes (`"\\frac{1}{2}"`), which
    strict JSON would turn into a form feed; only `\\\\`, `\\"` and `\\/` are decoded, every
    other backslash is kept as written.
    """
    out: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append(nxt if nxt in '\\"/' else char + nxt)
            i += 2
            continue
        if char == '"':
            return "".join(out)
        out.append(char)
        i += 1
    return None


def extract_json_answer(reply: str) -> str | None:
    """The `answer` field of a reply that is (or ends with) a JSON object, or None.

    ZeroEval asks for `{"reasoning": ..., "answer": ...}`; the last `"answer"` key counts. A
    bare value (`"answer": 42`) is read up to the next `,`, `}` or line end.
    """
    tail = _tail(reply)
    at = tail.rfind('"answer"')
    if at < 0:
        return None
    i = at + len('"answer"')
    while i < len(tail) and tail[i] in " \t\r\n":
        i += 1
    if i >= len(tail) or tail[i] != ":":
        return None
    i += 1
    while i < len(tail) and tail[i] in " \t\r\n":
        i += 1
    if i < len(tail) and tail[i] == '"':
        value = _json_string(tail, i)
    else:
        end = len(tail)
        for stop in (",", "}", "\n"):
            found = tail.find(stop, i)
            if 0 <= found < end:
                end = found
        value = tail[i:end]
    value = None if value is None else value.strip()
    return value or None


def extract_math_answer(reply: str) -> str | None:
    """A reply's final answer as written: the JSON `answer` field (its `\\boxed{}` content when
    it has one), else the last `\\boxed{}`, else the text after the last "answer is"/"answer:",
    else None."""
    answer = extract_json_answer(reply)
    if answer is not None:
        return last_boxed(answer) or answer
    boxed = last_boxed(reply)
    if boxed is not None:
        return boxed
    found = _ANSWER_IS.findall(_tail(reply))
    if found:
        return str(found[-1]).strip().rstrip(".").strip("$ ")
    return None


def _unwrap_text(text: str) -> str:
    # Apply until no `\text{...}` remains; each pass removes at least one, so it is bounded.
    for _ in range(8):
        new = _TEXT_COMMAND.sub(lambda m: m.group(1), text)
        if new == text:
            break
        text = new
    return text


def _drop_units(text: str) -> str:
    """`5 \\text{ cm}` → `5`: MATH's rule that text after a spaced `\\text{ ` is a unit, plus
    trailing unit words."""
    if "\\text{ " in text:
        text = text.split("\\text{ ", 1)[0]
    text = _unwrap_text(text).strip()
    words = text.split(" ")
    while len(words) > 1 and _UNIT_WORDS.fullmatch(words[-1].lower().strip(".")):
        words.pop()
    return " ".join(words)


def normalise_math(answer: str) -> str:
    """A canonical string for a final math answer (MATH's `strip_string`, extended).

    Unwraps `\\boxed{}` and `\\text{}`; drops `\\left`/`\\right`, spacing commands, `$`,
    degrees, percent signs, units (and any words after a lone number), quotes, `x =` prefixes
    and `… =` before a final number, spaces and a trailing `.`; writes `\\dfrac`
    and `\\tfrac` as `\\frac`, `\\frac12` as `\\frac{1}{2}`, `\\sqrt2` as `\\sqrt{2}`, `a/b`
    of integers as `\\frac{a}{b}`, `0.50` as `0.5`, `1,000` as `1000` and `1112_3` (digits
    in a base) as `1112`.
    """
    text = _tail(answer).strip()
    boxed = last_boxed(text)
    if boxed is not None:
        text = boxed
    text = text.replace("\n", " ").replace("\\!", "").replace("\\\\", "\\")
    text = text.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    text = text.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    text = text.replace("tfrac", "frac").replace("dfrac", "frac")
    text = _DEGREES.sub("", text)
    text = _SPACING.sub(" ", text)
    text = _drop_units(text)
    text = text.strip().rstrip(".").strip().strip('"').strip()
    # `x = 5`, `k=5`: keep the value when the left side is a short name; `64 + 37 = 101`:
    # keep a plain number that ends a chain of equalities.
    if "=" in text:
        left, right = text.rsplit("=", 1)
        if (len(left.strip()) <= 2 and "=" not in left) or _NUMBER.match(right.strip()):
            text = right
    # `1152 cups of flour`: a number followed only by words is that number.
    worded = _NUMBER_WORDS.match(text)
    if worded:
        text = worded.group(1)
    text = text.replace(" ", "")
    text = _SQRT_SHORT.sub(r"\\sqrt{\1}", text)
    text = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", text)
    text = _FRAC_HALF.sub(r"\\frac{\1}{\2}", text)
    text = _FRAC_FIRST.sub(r"\\frac{\1}{\2}", text)
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    base = _BASE_SUBSCRIPT.match(text)
    if base:  # `1112_3`: digits written in base 3; the digits are the answer
        text = base.group(1)
    slash = _INT_SLASH.match(text)
    if slash:
        text = f"\\frac{{{slash.group(1)}}}{{{slash.group(2)}}}"
    if text.startswith("."):
        text = "0" + text
    if text.startswith("-.") or text.startswith("+."):
        text = text[0] + "0" + text[1:]
    value = math_value(text)
    if value is not None and _NUMBER.match(text):
        text = _canonical_number(value)
    return text


def _canonical_number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


def math_value(text: str) -> float | None:
    """The number a normalised answer denotes (`3`, `0.5`, `\\frac{1}{2}`, `-\\frac{3}{4}`),
    or None when it is not a plain number."""
    if _NUMBER.match(text):
        value = float(text)
        return value if math.isfinite(value) else None
    frac = _FRAC_NUMBERS.match(text)
    if frac:
        sign, num, den = frac.groups()
        if float(den) == 0:
            return None
        value = float(num) / float(den)
        return -value if sign else value
    return None


def math_key(answer: str) -> str:
    """A key under which equal math answers group (for votes): the number an answer denotes,
    written canonically (`\\frac{1}{2}` and `0.5` both give `'0.5'`), else its normal form."""
    text = normalise_math(answer)
    value = math_value(text)
    return text if value is None else _canonical_number(value)


def math_equal(answer: str | None, gold: str | None, rel_tol: float = 1e-6) -> bool:
    """Whether two final math answers are the same: equal after `normalise_math`, or the same
    number within `rel_tol`. A missing answer equals nothing."""
    if answer is None or gold is None:
        return False
    left, right = normalise_math(answer), normalise_math(gold)
    if not left or not right:
        return False
    if left == right:
        return True
    a, b = math_value(left), math_value(right)
    return a is not None and b is not None and math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-9)
