"""Shutdown steps that cannot hang: a cancelled task is made to stop, and every step is bounded.

Stopping a background task used to be `task.cancel()` then `await task`, unbounded. On CPython
3.11 a cancellation can be lost: `asyncio.wait_for` returns the inner result and swallows the
`CancelledError` when the inner awaitable finishes in the same loop turn as the cancel arrives
(CPython gh-86296), and redis-py wraps its reads in such timeouts. A `while True` loop that was
in a Redis call at that moment (the residency coordinator) then never ends, and `await task`,
hence the gateway's shutdown on SIGTERM, waits forever.

`cancel_and_wait` sends the cancellation again every 0.1 s while the task runs, so a lost one is
re-sent at the task's next `await`; a task that ignores them all is given up after `timeout_s`,
with an error logged, and shutdown goes on. `bounded` puts the same bound on any other step (a
client's `aclose`, the engines' stop) and logs instead of raising when it fails.

The re-sent cancellation also interrupts what a task awaits in its own cleanup, so a task
stopped this way should not need more than 0.1 s of awaiting in its `finally`.

Example::

    await cancel_and_wait(self._coordinator, settings.shutdown_timeout_s, "residency coordinator")
    await bounded(self.http.aclose(), settings.shutdown_timeout_s, "the HTTP client's close")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

__all__ = ["RESEND_S", "SHUTDOWN_TIMEOUT_S", "bounded", "cancel_and_wait"]

log = logging.getLogger("coe.shutdown")

#: the default bound on one shutdown step (the gateway's is `COE_SHUTDOWN_TIMEOUT_S`)
SHUTDOWN_TIMEOUT_S = 40.0

#: how often a cancellation is sent again to a task that has not stopped
RESEND_S = 0.1


async def cancel_and_wait(task: asyncio.Future[Any], timeout_s: float, what: str) -> bool:
    """Cancel `task` and wait until it is done, re-sending the cancellation every `RESEND_S`.

    True once it is done. False, with an error naming `what` logged, when it is still running
    after `timeout_s`: it is left behind and the caller goes on (never raises on a timeout).
    An exception the task had died of is logged, not raised. A cancellation of the caller
    itself propagates as usual.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not task.done():
        left = deadline - loop.time()
        if left <= 0:
            log.error(
                "shutdown: %s still running %.1f s after it was cancelled; going on without it",
                what,
                timeout_s,
            )
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(RESEND_S, left))
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("shutdown: %s had failed: %r", what, exc, exc_info=exc)
    return True


async def bounded(aw: Awaitable[Any], timeout_s: float, what: str) -> bool:
    """Await one shutdown step for at most `timeout_s`; True when it finished without error.

    On a timeout or an exception the error is logged, naming `what`, and False is returned, so
    shutdown goes on with its next step. A step still running at the bound is cancelled once
    and not waited for (`asyncio.wait_for` would wait for it to honour the cancellation, which
    is the unbounded wait this avoids). The step runs in a task of its own.
    """
    step = asyncio.ensure_future(aw)
    try:
        await asyncio.wait({step}, timeout=timeout_s)
    except asyncio.CancelledError:
        step.cancel()
        raise
    if not step.done():
        log.error("shutdown: %s did not finish in %.1f s; going on without it", what, timeout_s)
        step.cancel()
        return False
    if step.cancelled():
        log.error("shutdown: %s was cancelled", what)
        return False
    if (exc := step.exception()) is not None:
        log.error("shutdown: %s failed: %r", what, exc, exc_info=exc)
        return False
    return True
