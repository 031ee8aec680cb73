"""Grading answers against gold: the final number, the option letter, or the unit tests.

The short-answer extraction is `experts.compose.answers`, the same code `vote` uses, so a
composed answer counts as right exactly when the profiler would grade it right.

HumanEval code runs in a child process that cannot do much harm: a fresh temporary folder as
its working directory, an empty environment, `python -I -S` (no user site, no site-packages),
limits on CPU seconds, memory, file size and open files, a wall-clock timeout that kills its
whole process group, socket creation disabled in the child, and, where `unshare` works (Linux
user namespaces), its own network namespace with no interfaces up. It is a guard against
accidents and runaway loops in model-written code, not a sandbox for hostile code.

>>> grade_number("6 * 7 = 42. The answer is 42", "42")
1.0
>>> grade_choice("The answer is (B)", "C", "ABCD")
0.0
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from experts.compose.answers import extract_number, extract_option
from experts.compose.math_answers import (
    MAX_SCAN_CHARS,
    extract_json_answer,
    extract_math_answer,
    math_equal,
    math_key,
)
from training.benchsets import Question

__all__ = [
    "extract_code",
    "grade",
    "grade_choice",
    "grade_code",
    "grade_math",
    "grade_number",
    "math_reply_answer",
    "number_reply_answer",
    "option_reply_answer",
]

_PRELUDE = """\
import resource as _resource
for _limit, _value in (
    (_resource.RLIMIT_CPU, {cpu}),
    (_resource.RLIMIT_AS, {memory}),
    (_resource.RLIMIT_FSIZE, {fsize}),
    (_resource.RLIMIT_NOFILE, 64),
):
    _resource.setrlimit(_limit, (_value, _value))
import socket as _socket
def _refuse(*args, **kwargs):
    raise OSError("network access is disabled while grading")
_socket.socket = _refuse
_socket.create_connection = _refuse
_socket.socketpair = _refuse
del _socket, _refuse, _resource, _limit, _value
"""

MEMORY_BYTES = 1 << 30
FILE_BYTES = 16 << 20


def grade_number(response: str, gold: str) -> float:
    """1.0 when the response's final number equals the gold number."""
    answer, expected = extract_number(response), extract_number(gold)
    return float(answer is not None and answer == expected)


def grade_choice(response: str, gold: str, letters: str = "ABCDEFGHIJ") -> float:
    """1.0 when the option letter the response chose is the gold letter."""
    return float(extract_option(response, letters) == gold.strip().upper())


def number_reply_answer(reply: str) -> str | None:
    """A reply's final number, canonical: from its JSON `answer` field when it has one
    (ZeroEval's format), else by `extract_number` over the reply's tail."""
    field = extract_json_answer(reply)
    return extract_number(field if field is not None else reply[-MAX_SCAN_CHARS:])


def math_reply_answer(reply: str) -> str | None:
    """A reply's final math answer as a vote key (`math_key`), or None when it states none."""
    answer = extract_math_answer(reply)
    return None if answer is None else math_key(answer)


def option_reply_answer(reply: str, letters: str = "ABCDEFGHIJ") -> str | None:
    """The option letter a reply chose (`extract_option` over its tail), or None."""
    return extract_option(reply[-MAX_SCAN_CHARS:], letters)


def grade_math(reply: str, gold: str) -> float:
    """1.0 when the reply's final math answer equals `gold` (`math_equal`: LaTeX normalised,
    numbers compared by value).

    >>> grade_math('{"reasoning": "...", "answer": "\\\\dfrac{1}{2}"}', "0.5")
    1.0
    """
    return float(math_equal(extract_math_answer(reply), gold))


def extract_code(response: str) -> str:
    """The code of a response: its fenced blocks (the longest python one), else the text."""
    blocks = re.findall(r"```(?:python|py)?[ \t]*\n(.*?)```", response, flags=re.DOTALL)
    if not blocks:
        opened = re.search(r"```(?:python|py)?[ \t]*\n(.*)", response, flags=re.DOTALL)
        blocks = [opened.group(1)] if opened else []
    return max(blocks, key=len) if blocks else response


def program(response: str, prompt: str, test: str, entry_point: str, cpu_s: int = 10) -> str:
    """The file to run: a prelude that limits the process and disables sockets, the solution
    (a whole function, or a body completing `prompt`), HumanEval's `check`, and a call of it."""
    code = extract_code(response)
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, flags=re.MULTILINE):
        # A whole function: keep the prompt's imports and helpers above it.
        head = prompt[: prompt.find(f"def {entry_point}")] if f"def {entry_point}" in prompt else ""
        solution = head + "\n" + code
    else:
        solution = prompt + code
    prelude = _PRELUDE.format(cpu=cpu_s, memory=MEMORY_BYTES, fsize=FILE_BYTES)
    return f"{prelude}\n{solution}\n\n{test}\n\ncheck({entry_point})\n"


@functools.cache
def _isolation() -> list[str]:
    """`unshare -rn` where it works here (a private, empty network namespace), else []."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    try:
        done = subprocess.run([unshare, "-rn", "true"], capture_output=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [unshare, "-rn"] if done.returncode == 0 else []


def grade_code(
    response: str, prompt: str, test: str, entry_point: str, timeout_s: float = 10
) -> float:
    """1.0 when the solution passes HumanEval's unit tests within `timeout_s` seconds."""
    source = program(response, prompt, test, entry_point, max(1, int(timeout_s)))
    with tempfile.TemporaryDirectory(prefix="coe-grade-") as folder:
        path = Path(folder) / "solution.py"
        path.write_text(source)
        command = [*_isolation(), sys.executable, "-I", "-S", str(path)]
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        with subprocess.Popen(
            command,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        ) as child:
            try:
                return float(child.wait(timeout=timeout_s) == 0)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return 0.0


async def grade(question: Question, response: str) -> float:
    """Grade one response to `question` by its kind; code runs in a worker thread."""
    if question.kind == "number":
        return grade_number(response, question.gold)
    if question.kind == "choice":
        return grade_choice(response, question.gold, str(question.extra.get("letters")))
    test, entry_point = str(question.extra["test"]), str(question.extra["entry_point"])
    return await asyncio.to_thread(grade_code, response, question.question, test, entry_point)
