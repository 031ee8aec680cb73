"""What a reply's own reasoning says about whether to believe it: its arithmetic, re-done.

A grade-school maths reply shows its steps ("9 eggs * $2 per egg = $18"); a step whose result
is not what its left side computes to is a strong sign that the reply is wrong, whatever else
agrees with it. `arithmetic(reply)` finds the "a op b … = c" steps of a reply and recomputes
them; `features(reply, conclusion)` adds what else a reply's text shows (whether its final
answer is the last value it computed, its length, an explicit answer marker, `\\boxed{}`), and
`suspect(reply, rule, conclusion)` is what a checked agreement chain reads (`router.chains`):
a cheap member's suspect reply does not vote.

The check is deliberately conservative, since a false alarm costs a call while a missed slip
costs nothing more than today: a step is only checked when its right side is a lone number
and its left side a well-formed expression of numbers, `+ - * / × ÷ x \\times \\cdot \\div`,
parentheses and `%`, with up to four unit words after each number ("16 eggs - 7 eggs = 9");
both operator precedence and a left-to-right reading are tried, `%` both as /100 and as
written, and a result may be rounded to the digits it shows (within half a unit of its last
digit, or 1 % when the step divides or uses decimals). Anything else (words between an operator
and its number, `^`, `≈`, a number right after a number) ends the expression: such steps are
not checked.

Replies are untrusted text: the scan is one pass of one regular expression without nested
quantifiers over at most the last `MAX_CHECK_CHARS` characters, expressions longer than
`MAX_TERMS` numbers are not evaluated, and numbers are floats (no big-integer arithmetic).

>>> arithmetic("16 eggs - 7 eggs = 9 eggs, and 9 * $2 = $18.")
(2, 0, 18.0)
>>> arithmetic("So 12 + 15 = 28 apples.")
(1, 1, 28.0)
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

__all__ = [
    "MAX_CHECK_CHARS",
    "MAX_TERMS",
    "RULES",
    "ReplyFeatures",
    "arithmetic",
    "features",
    "suspect",
]

#: Characters read from the end of a reply (where its reasoning and conclusion are).
MAX_CHECK_CHARS = 20_000
#: Numbers in one expression beyond which it is not evaluated.
MAX_TERMS = 12
#: Items (numbers, operators, parentheses) beyond which a side of a step is not read.
MAX_ITEMS = 4 * MAX_TERMS
#: Unit words allowed after a number inside an expression ("7 eggs used").
MAX_UNIT_WORDS = 4

_TOKEN = re.compile(
    r"(?P<num>\d{1,3}(?:,\d{3})++(?:\.\d+)?|\d++(?:\.\d+)?)"
    r"|(?P<nl>\n|\\n)"  # a line break, or one written inside a JSON string
    r"|(?P<times>(?<=[\d\s])[xX](?=\s*+\$?\d))"  # 3 x 4
    r"|(?P<var>(?<=\d)[A-Za-z]++)"  # 2x, 5th, 10am: not a number with units
    r"|(?P<op>\*\*|[+*/×÷·−-]|\\times|\\cdot|\\div)"
    r"|(?P<eq>=)"
    r"|(?P<open>\()|(?P<close>\))"
    r"|(?P<pct>%)"
    r"|(?P<skip>[$ \t]++)"
    r"|(?P<word>\\?[A-Za-z]++)"
    r"|(?P<other>.)",
    re.DOTALL,
)
_OPS = {"+": "+", "-": "-", "−": "-", "*": "*", "×": "*", "·": "*", "\\times": "*",
        "\\cdot": "*", "/": "/", "÷": "/", "\\div": "/"}  # fmt: skip
_MARKER = re.compile(r"####|\\boxed\{|final answer|the answer is|\"answer\"\s*+:", re.IGNORECASE)


@dataclass(frozen=True)
class ReplyFeatures:
    """What one reply's text shows: `steps` checked, `wrong` steps among them, whether the
    final answer equals the last value a step computed (None: no step or no answer), the
    reply's length in characters, an explicit final-answer marker, a `\\boxed{}` answer."""

    steps: int
    wrong: int
    ends_on_last_value: bool | None
    length: int
    marker: bool
    boxed: bool


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


class _Segment:
    """One side of an "=": the expression's items (numbers as (value, has_percent), operators,
    parentheses) since the expression began, and the text of a lone number."""

    __slots__ = ("broken", "items", "numbers", "text", "units")

    def __init__(self) -> None:
        self.items: list[object] = []
        self.numbers = 0
        self.units = 0
        self.broken = False
        self.text = ""

    def last_is_number(self) -> bool:
        return bool(self.items) and isinstance(self.items[-1], list)


class _Parser:
    """An expression of numbers ([value, has %]), operators and parentheses, read with
    operator precedence or strictly left to right."""

    def __init__(self, items: list[object], percent: bool, precedence: bool) -> None:
        self.items, self.percent, self.precedence, self.pos = items, percent, precedence, 0

    def peek(self) -> object:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def atom(self) -> float | None:
        sign = 1.0
        if self.peek() == "-":  # a unary minus
            sign, self.pos = -1.0, self.pos + 1
        item = self.peek()
        self.pos += 1
        if item == "(":
            value = self.expression()
            if value is None or self.peek() != ")":
                return None
            self.pos += 1
            return sign * value
        if isinstance(item, list):
            value = float(item[0])
            return sign * (value / 100.0 if self.percent and item[1] else value)
        return None

    def term(self) -> float | None:
        value = self.atom()
        while value is not None and self.peek() in ("*", "/"):
            op = self.peek()
            self.pos += 1
            value = _apply(value, op, self.atom())
        return value

    def expression(self) -> float | None:
        operand = self.term if self.precedence else self.atom
        value = operand()
        ops = ("+", "-") if self.precedence else ("+", "-", "*", "/")
        while value is not None and self.peek() in ops:
            op = self.peek()
            self.pos += 1
            value = _apply(value, op, operand())
        return value


def _apply(a: float, op: object, b: float | None) -> float | None:
    if b is None:
        return None
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return None if b == 0 else a / b


def _evaluate(items: list[object], percent: bool, precedence: bool) -> float | None:
    """The value of an expression, or None when it is malformed (or divides by zero)."""
    parser = _Parser(items, percent, precedence)
    value = parser.expression()
    if value is None or parser.pos != len(items) or not math.isfinite(value):
        return None
    return value


def _values(items: list[object]) -> list[float]:
    has_pct = any(isinstance(i, list) and i[1] for i in items)
    out = []
    for percent in (False, True) if has_pct else (False,):
        for precedence in (True, False):
            value = _evaluate(items, percent, precedence)
            if value is not None:
                out.append(value)
    return out


def _trim(items: list[object]) -> list[object]:
    """The items without unmatched parentheses at either end ("(16 - 7 = 9)")."""
    while items and items[0] == "(" and items.count("(") > items.count(")"):
        items = items[1:]
    while items and items[-1] == ")" and items.count(")") > items.count("("):
        items = items[:-1]
    while items and items[-1] in _OPS.values():  # a trailing operator: not an expression
        return []
    return items


def _check(left: _Segment, right: _Segment) -> bool | None:
    """Whether the step `left = right` holds (None: not a checkable step)."""
    if len(left.items) > MAX_ITEMS or len(right.items) > MAX_ITEMS:
        return None
    items = _trim(left.items)
    ops = [i for i in items if isinstance(i, str) and i in ("+", "-", "*", "/")]
    if left.broken or not ops or not (0 < left.numbers <= MAX_TERMS):
        return None
    if items and items[0] == "-" and len(ops) == 1:  # "-5" is a number, not a step
        return None
    rhs = _trim(right.items)
    sign = 1.0
    if len(rhs) == 2 and rhs[0] == "-":
        sign, rhs = -1.0, rhs[1:]
    if len(rhs) != 1 or not isinstance(rhs[0], list):
        return None
    got = _values(items)
    if not got:
        return None
    value, pct = sign * rhs[0][0], rhs[0][1]
    shown = _decimals(right.text)
    wanted = [(value, 10.0**-shown)]
    if pct:
        wanted.append((value / 100.0, 10.0 ** -(shown + 2)))
    # dividing or rounded inputs: the result may be rounded (or cut) to the digits it shows
    loose = "/" in ops or any(isinstance(i, list) and i[0] != int(i[0]) for i in items)
    for target, unit in wanted:
        tolerance = max(0.5 * unit, 0.01 * abs(target)) if loose else 0.5 * unit
        if any(abs(g - target) <= tolerance * (1 + 1e-9) for g in got):
            return True
    return False


class _Scanner:
    """One left-to-right pass over a reply's tokens: the current chain of "="-separated
    segments, closed (its steps checked) at every break."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.steps = self.wrong = 0
        self.last_value: float | None = None
        self.chain: list[_Segment] = [_Segment()]
        self.tainted = False  # inside a malformed expression: nothing until the next break

    @property
    def seg(self) -> _Segment:
        return self.chain[-1]

    def restart(self, check: bool = True, taint: bool = False) -> None:
        if check:
            for left, right in itertools.pairwise(self.chain):
                ok = _check(left, right)
                if ok is not None:
                    self.steps += 1
                    self.wrong += not ok
        self.chain = [_Segment()]
        self.tainted = self.tainted or taint

    def feed(self, kind: str, raw: str, end: int) -> None:
        if kind in ("nl", "other"):
            self.restart()
            self.tainted = False
        elif self.tainted:
            self.tainted = kind != "word"
        elif kind == "word":
            self.word()
        elif kind == "var":  # the number before was not a number: nothing here is checked
            self.restart(check=False, taint=True)
        elif kind == "num":
            self.number(raw)
        elif kind == "pct":
            self.percent()
        elif kind in ("op", "times"):
            self.operator("*" if kind == "times" else raw, end)
        elif kind == "open":
            self.open()
        elif kind == "close":
            if self.seg.items:
                self.seg.items.append(")")
                self.seg.units = 0
        elif kind == "eq":
            self.equals()

    def equals(self) -> None:
        if self.seg.items:
            self.chain.append(_Segment())
        else:  # "Total = 3 + 4 = 7": what follows may be a step
            self.restart()

    def word(self) -> None:
        seg = self.seg
        if seg.last_is_number() and seg.units < MAX_UNIT_WORDS:
            seg.units += 1
        elif seg.items or len(self.chain) > 1:
            self.restart()
        # else: words before an expression begins

    def number(self, raw: str) -> None:
        seg = self.seg
        if seg.last_is_number() and not seg.units:  # "350 000": one number, or a list
            self.restart(check=False, taint=True)
            return
        if seg.last_is_number() or (seg.items and seg.items[-1] == ")"):
            self.restart()  # a number after a number and its units: not one expression
            seg = self.seg
        value = _number(raw)
        seg.items.append([value, False])
        seg.numbers += 1
        seg.units = 0
        seg.text = raw
        if len(self.chain) > 1 and seg.numbers == 1 and len(seg.items) <= 2:
            self.last_value = -value if seg.items[0] == "-" else value

    def percent(self) -> None:
        seg = self.seg
        if seg.last_is_number() and seg.units == 0:
            item = seg.items[-1]
            assert isinstance(item, list)
            item[1] = True
        else:
            self.restart(taint=True)

    def operator(self, raw: str, end: int) -> None:
        seg = self.seg
        op = _OPS.get(raw)
        prev = seg.items[-1] if seg.items else None
        if (
            op == "-"
            and prev is None
            and len(self.chain) == 1
            and self.text[end : end + 1] in (" ", "\t")
        ):
            return  # a list's bullet
        after_op = isinstance(prev, str) and prev in _OPS.values()
        if op is None or ((prev is None or prev == "(" or after_op) and (op != "-" or prev == "-")):
            self.restart(taint=True)  # "**" (bold or a power), or no left operand
            return
        seg.items.append(op)
        seg.units = 0

    def open(self) -> None:
        seg = self.seg
        if seg.last_is_number():
            if seg.units:
                self.restart()
                seg = self.seg
            else:
                seg.items.append("*")  # 2(3 + 4)
        seg.items.append("(")
        seg.units = 0


def arithmetic(reply: str) -> tuple[int, int, float | None]:
    """`(steps checked, wrong steps, the last lone number after an "=")` of a reply's text."""
    scan = _Scanner(reply[-MAX_CHECK_CHARS:])
    for match in _TOKEN.finditer(scan.text):
        if match.lastgroup != "skip":
            scan.feed(str(match.lastgroup), match.group(), match.end())
    scan.restart()
    return scan.steps, scan.wrong, scan.last_value


def features(reply: str, conclusion: str | None) -> ReplyFeatures:
    """The `ReplyFeatures` of a reply whose conclusion (`router.answers.conclusion`) is
    `conclusion`."""
    steps, wrong, last = arithmetic(reply)
    ends: bool | None = None
    if last is not None and conclusion is not None:
        try:
            ends = abs(float(conclusion) - last) <= 1e-6 * max(1.0, abs(last))
        except ValueError:
            ends = None
    tail = reply[-MAX_CHECK_CHARS:]
    return ReplyFeatures(
        steps, wrong, ends, len(reply), _MARKER.search(tail) is not None, "\\boxed" in tail
    )


#: The rules a checked chain may read (`suspect`): `arithmetic`, a wrong step; `strict`, a
#: wrong step, no checkable step, or a final answer that is not the last value computed.
RULES: tuple[str, ...] = ("arithmetic", "strict")


def suspect(reply: str, rule: str = "arithmetic", conclusion: str | None = None) -> bool:
    """Whether a reply whose conclusion is `conclusion` fails `rule` (`RULES`)."""
    if rule == "arithmetic":
        return arithmetic(reply)[1] > 0
    if rule != "strict":
        raise ValueError(f"unknown check {rule!r}: one of {RULES}")
    f = features(reply, conclusion)
    return f.wrong > 0 or f.steps == 0 or f.ends_on_last_value is not True
