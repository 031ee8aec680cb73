"""Errors raised by the expert side of coe.

    ExpertError                  an expert could not give an answer
    ├── ExpertUnavailable        connection refused or reset, process not running
    │   └── ExpertOverloaded     its queue in the gateway is full, or the wait in it too long
    ├── ExpertTimeout            no first byte (or no next byte) within the timeout
    └── ExpertHTTPError          the expert answered with an HTTP error status
    PoolConfigError              the pool file is missing or invalid (names file and field)
    EngineStartError             a local expert process did not come up
    ResidencyError               an expert could not be put to sleep or woken

Foreign errors (httpx, OS) are translated at the boundary, keeping the cause.
"""

from __future__ import annotations

__all__ = [
    "EngineStartError",
    "ExpertError",
    "ExpertHTTPError",
    "ExpertOverloaded",
    "ExpertTimeout",
    "ExpertUnavailable",
    "PoolConfigError",
    "ResidencyError",
]


class ExpertError(Exception):
    """An expert could not give an answer; `retryable` says whether another expert may."""

    retryable = True

    def __init__(self, expert: str, message: str) -> None:
        super().__init__(f"{expert}: {message}")
        self.expert = expert
        self.message = message


class ExpertUnavailable(ExpertError):
    """The expert cannot be reached."""


class ExpertOverloaded(ExpertUnavailable):
    """The call was shed before it reached the expert: its queue was full or the wait too long.
    `retry_after_s` says when a retry may find room. The expert itself is not unhealthy."""

    def __init__(self, expert: str, message: str, retry_after_s: float) -> None:
        super().__init__(expert, message)
        self.retry_after_s = retry_after_s


class ExpertTimeout(ExpertError):
    """The expert did not answer in time."""


class ExpertHTTPError(ExpertError):
    """The expert answered with an error status.

    Only statuses that blame the request itself (400, 413, 422: a prompt over the context
    length, an invalid parameter) are final; anything else (401/403 from a bad key in the pool,
    404 for a model id the server does not serve, 429, 5xx) is the expert's problem, and another
    expert may answer.
    """

    CLIENT_FAULTS = frozenset({400, 413, 422})

    def __init__(self, expert: str, status_code: int, message: str) -> None:
        super().__init__(expert, f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.upstream_message = message
        self.retryable = status_code not in self.CLIENT_FAULTS


class PoolConfigError(ValueError):
    """The pool file is invalid; the message names the file and the field."""


class EngineStartError(RuntimeError):
    """A local expert server did not start; the message says why and where its log is."""


class ResidencyError(RuntimeError):
    """An expert could not be put to sleep or woken; the message says which call failed."""


class ResidencyWaitTimeout(ResidencyError):
    """Another replica drives residency and did not wake the expert within the wait bound, or
    the lease changed hands mid-switch. Nothing is broken: calls waiting for it are shed
    (503 with `retry-after`) and a retry is expected to succeed."""
