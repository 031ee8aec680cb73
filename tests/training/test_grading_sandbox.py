"""The HumanEval sandbox grades what `check` ran, not how the process exited, and nothing the
code starts outlives the grading."""

from __future__ import annotations

import time
from pathlib import Path

from training.grading import grade_code

PROMPT = 'def add(a: int, b: int) -> int:\n    """a + b"""\n'
TEST = "\n\ndef check(candidate):\n    assert candidate(2, 3) == 5\n"


def test_an_exit_before_the_checks_is_not_a_pass() -> None:
    for escape in ("raise SystemExit(0)", "import os; os._exit(0)"):
        code = f"def add(a, b):\n    return 0\n\n{escape}\n"
        assert grade_code(code, PROMPT, TEST, "add") == 0.0, escape
    assert grade_code("def add(a, b):\n    return a + b\n", PROMPT, TEST, "add") == 1.0


def test_the_socket_patch_has_no_private_bypass() -> None:
    code = (
        "def add(a, b):\n"
        "    import _socket\n"
        "    _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM).close()\n"
        "    return a + b\n"
    )
    assert grade_code(code, PROMPT, TEST, "add") == 0.0


def test_a_child_that_leaves_the_process_group_is_killed(tmp_path: Path) -> None:
    marker = tmp_path / "survived"
    code = (
        "import os, time\n"
        "def add(a, b):\n"
        "    return a + b\n"
        "try:\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        time.sleep(1.5)\n"
        f"        open({str(marker)!r}, 'w').write('alive')\n"
        "        os._exit(0)\n"
        "except OSError:\n"
        "    pass\n"
    )
    grade_code(code, PROMPT, TEST, "add")
    time.sleep(2.5)
    assert not marker.exists()
