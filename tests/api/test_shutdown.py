"""The gateway's shutdown is bounded: `COE_SHUTDOWN_TIMEOUT_S`, and a lifespan whose store
never finishes closing still ends, with the experts stopped after it."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.app import create_app
from api.settings import Settings
from experts.testing import FakeExpert, FakeNetwork
from tests.conftest import POOL, write_pool


def test_the_setting_is_read_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings(_env_file=None).shutdown_timeout_s == 40.0  # type: ignore[call-arg]
    monkeypatch.setenv("COE_SHUTDOWN_TIMEOUT_S", "2.5")
    assert Settings(_env_file=None).shutdown_timeout_s == 2.5  # type: ignore[call-arg]
    monkeypatch.setenv("COE_SHUTDOWN_TIMEOUT_S", "0")
    with pytest.raises(ValidationError, match="shutdown_timeout_s"):
        Settings(_env_file=None)  # type: ignore[call-arg]


async def test_a_store_that_never_closes_does_not_hang_the_lifespan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        pool=write_pool(tmp_path / "pool.yaml", POOL),
        work_dir=tmp_path / "work",
        shutdown_timeout_s=0.3,
        _env_file=None,  # type: ignore[call-arg]
    )
    network = FakeNetwork({n: FakeExpert(n) for n in ("alpha", "beta")})
    app = create_app(settings, transport=network)

    async def never() -> None:
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="coe.shutdown"):
        async with app.router.lifespan_context(app):
            pool = app.state.pool
            assert pool.shutdown_timeout_s == 0.3
            app.state.store.aclose = never
            started = time.monotonic()
        elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2.0, elapsed
    assert "closing the store did not finish in 0.3 s" in caplog.text
    assert pool.http.is_closed  # the pool was still stopped after the stuck step
