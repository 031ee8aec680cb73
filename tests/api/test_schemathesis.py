"""The OpenAPI document describes the API: schemathesis generates requests from it (valid and
invalid) against a real gateway over fake experts and runs every check it has, so an
undocumented status, a schema-valid request that is refused, or a 5xx fails here.

Bounded: a few dozen examples per operation, no shrinking budget past a few seconds."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    object_level_authorization,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)

from api.app import create_app
from api.settings import Settings
from experts.testing import FakeExpert, FakeNetwork
from tests.conftest import POOL, write_pool

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    use_after_free,
    ensure_resource_availability,
    ignored_auth,
    missing_required_header,
    unsupported_method,
    allow_header_conformance,
    object_level_authorization,
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.Schema]:
    folder = tmp_path_factory.mktemp("schemathesis")
    fakes = {"alpha": FakeExpert("alpha", "alpha says hi"), "beta": FakeExpert("beta", "hi")}
    settings_ = Settings(
        pool=write_pool(folder / "pool.yaml", POOL),
        work_dir=folder / "work",
        _env_file=None,  # type: ignore[call-arg]
    )
    app = create_app(settings_, transport=FakeNetwork(fakes))
    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start")
        time.sleep(0.05)
    try:
        yield schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
    finally:
        server.should_exit = True
        thread.join(30)


def _operations(schema: schemathesis.Schema) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_does_what_its_openapi_document_says(
    api_schema: schemathesis.Schema, mode: GenerationMode
) -> None:
    # (schemathesis's own pytest loader does not run under pytest 9: hypothesis drives it here)
    failures: list[str] = []
    for operation in _operations(api_schema):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=10,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            check()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE  # no parameters: nothing invalid to send
        except Exception as exc:  # every operation is tried; the failures are listed together
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
