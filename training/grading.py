"""Grading answers against gold: the final number, the option letter, or the unit tests.

The short-answer extraction is `router.answers`, the same code `vote` uses, so a
composed answer counts as right exactly when the profiler would grade it right.

HumanEval code runs in a child process that cannot do much harm: a fresh temporary folder as
its working directory, an empty environment, `python -I -S` (no user site, no site-packages),
limits on CPU seconds, memory, file size and open files, socket creation disabled (`socket` and
`_socket` both), no new processes nor sessions (`fork`, `setsid`, `posix_spawn`, `subprocess`
refuse), and, where `unshare` works (Linux user namespaces), its own network namespace with no
interfaces up and its own PID namespace, so that everything it started dies with it. Its process
group is killed when it ends, on time or not. It passes only when it prints, after `check` ran,
a random token it was never shown before its source was written: an exit status of 0 (a
`SystemExit(0)` before the tests) proves nothing. It is a guard against accidents and runaway
loops in model-written code, not a sandbox for hostile code.

>>> grade_number("6 * 7 = 42. The answer is 42", "42")
1.0
>>> grade_choice("The answer is (B)", "C", "ABCD")
0.0
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from router.answers import (
    extract_number,
    extract_option,
    math_reply_answer,
    number_reply_answer,
    option_reply_answer,
)
from router.math_answers import (
    extract_math_answer,
    math_equal,
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
import socket as _socket, _socket as _csocket, os as _os, posix as _posix
_os.remove(__file__)  # compiled already; the code may not read its own source (the sentinel)
def _refuse(*args, **kwargs):
    raise OSError("network access and new processes are disabled while grading")
for _module, _names in (
    (_socket, ("socket", "create_connection", "socketpair", "fromfd", "SocketType")),
    (_csocket, ("socket", "socketpair", "SocketType")),
    (_os, ("fork", "forkpty", "setsid", "setpgrp", "setpgid", "posix_spawn", "posix_spawnp",
           "system", "popen")),
    (_posix, ("fork", "forkpty", "setsid", "setpgrp", "setpgid", "posix_spawn", "posix_spawnp",
              "system")),
):
    for _name in _names:
        if hasattr(_module, _name):
            setattr(_module, _name, _refuse)
import _posixsubprocess
_posixsubprocess.fork_exec = _refuse
del _socket, _csocket, _os, _posix, _posixsubprocess, _module, _names, _name
del _refuse, _resource, _limit, _value
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


def program(
    response: str, prompt: str, test: str, entry_point: str, cpu_s: int = 10, sentinel: str = ""
) -> str:
    """The file to run: a prelude that limits the process and disables sockets, the solution
    (a whole function, or a body completing `prompt`), HumanEval's `check`, a call of it, and
    then `sentinel` printed: the only sign that the checks ran to their end."""
    code = extract_code(response)
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, flags=re.MULTILINE):
        # A whole function: keep the prompt's imports and helpers above it.
        head = prompt[: prompt.find(f"def {entry_point}")] if f"def {entry_point}" in prompt else ""
        solution = head + "\n" + code
    else:
        solution = prompt + code
    prelude = _PRELUDE.format(cpu=cpu_s, memory=MEMORY_BYTES, fsize=FILE_BYTES)
    done = f"print({sentinel!r}, flush=True)\n" if sentinel else ""
    return f"{prelude}\n{solution}\n\n{test}\n\ncheck({entry_point})\n{done}"


@functools.cache
def _isolation() -> list[str]:
    """`unshare` where it works here: a private, empty network namespace, and a PID namespace
    whose processes all die with the graded one (`--kill-child`); else what works of it, or []."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    for command in ([unshare, "-rn", "--pid", "--fork", "--kill-child"], [unshare, "-rn"]):
        try:
            done = subprocess.run([*command, "true"], capture_output=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return command
    return []


def _kill_group(child: subprocess.Popen[bytes]) -> None:
    """Kill whatever is left in the child's process group (it leads a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


def grade_code(
    response: str, prompt: str, test: str, entry_point: str, timeout_s: float = 10
) -> float:
    """1.0 when the solution passes HumanEval's unit tests within `timeout_s` seconds: when the
    line printed after `check` returned is there, whatever the exit status."""
    sentinel = f"coe-checked-{secrets.token_hex(16)}"
    source = program(response, prompt, test, entry_point, max(1, int(timeout_s)), sentinel)
    with tempfile.TemporaryDirectory(prefix="coe-grade-") as folder:
        path = Path(folder) / "solution.py"
        path.write_text(source)
        command = [*_isolation(), sys.executable, "-I", "-S", str(path)]
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        output = Path(folder) / "stdout"  # a file: RLIMIT_FSIZE bounds it, a pipe would not
        with (
            output.open("wb") as out,
            subprocess.Popen(
                command,
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            ) as child,
        ):
            try:
                status = child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                return 0.0
            finally:
                _kill_group(child)
                child.kill()
                child.wait()
        with output.open("rb") as read:
            read.seek(max(0, output.stat().st_size - 4096))
            tail = read.read().decode(errors="replace").splitlines()
    return float(status == 0 and sentinel in (line.strip() for line in tail))


async def grade(question: Question, response: str) -> float:
    """Grade one response to `question` by its kind; code runs in a worker thread."""
    if question.kind == "number":
        return grade_number(response, question.gold)
    if question.kind == "choice":
        return grade_choice(response, question.gold, str(question.extra.get("letters")))
    if question.kind == "math":
        return grade_math(response, question.gold)
    test, entry_point = str(question.extra["test"]), str(question.extra["entry_point"])
    return await asyncio.to_thread(grade_code, response, question.question, test, entry_point)
