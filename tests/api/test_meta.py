"""What a response says about itself: request ids and the `x-coe-*` headers (`api.meta`)."""

from __future__ import annotations

import json
import os
import re
import uuid

import pytest

from api.meta import CoeMeta, _scores_json, new_request_id


def test_request_ids_are_version_4_uuids() -> None:
    ids = {new_request_id() for _ in range(1_000)}
    assert len(ids) == 1_000
    for request_id in ids:
        assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", request_id)
        hex_ = request_id.removeprefix("chatcmpl-")
        assert uuid.UUID(hex_).version == 4
        assert uuid.UUID(hex_).variant == uuid.RFC_4122
    assert new_request_id("cmpl").startswith("cmpl-")


def test_request_ids_are_the_uuid4_of_the_same_bits(monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(1_000):
        bits = os.urandom(16)
        monkeypatch.setattr(os, "urandom", lambda n, b=bits: b[:n])
        assert new_request_id() == f"chatcmpl-{uuid.UUID(bytes=bits, version=4).hex}"


@pytest.mark.parametrize(
    "scores",
    [
        {},
        {"fake": 0.5},
        {"qwen-7b": 0.712345678, "llama": 1e-20, "gpt-4o": 1.0, "negative": -0.33333},
        {"名前 é": 0.25, 'quo"te': 0.1},
        {"nan": float("nan"), "inf": float("inf")},  # not JSON numbers: json's own spelling
        {"int": 3},
    ],
)
def test_the_scores_header_is_json_dumps_text(scores: dict[str, float]) -> None:
    expected = json.dumps({k: round(v, 4) for k, v in scores.items()})
    assert _scores_json(scores) == expected
    meta = CoeMeta(router="r", scores=scores, experts=[], tried=[])
    assert meta.headers()["x-coe-scores"] == expected
