"""Errors a user can cause with their data or arguments.

CoeTrainingError
├── DataError        a dataset file is malformed (names the file and, when known, the row)
└── UnknownRouterError  a router name not in `router.ROUTERS`
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CoeTrainingError", "DataError", "UnknownRouterError"]


class CoeTrainingError(Exception):
    """Base of the errors `coe data/train/eval/calibrate` report to the user without a trace."""


class DataError(CoeTrainingError, ValueError):
    """A dataset file cannot be used as it is; the message says where and what to fix."""

    def __init__(self, source: str | Path, message: str, row: int | None = None) -> None:
        self.source = str(source)
        self.row = row
        where = f"{source}, row {row}" if row is not None else f"{source}"
        super().__init__(f"{where}: {message}")


class UnknownRouterError(CoeTrainingError, KeyError):
    """`--router NAME` is not a registered router family."""

    def __str__(self) -> str:
        return str(self.args[0])
