"""`coe serve --workers N`: refused without shared state, experts attached not restarted."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from api.cli import app
from api.workers import _attached_pool
from experts.pool import load_pool

POOL = """experts:
  - {name: remote, engine: openai, base_url: 'http://a/v1', max_concurrency: 8}
  - {name: local, engine: llamacpp, gguf: /models/tiny.gguf, chat_format: gemma, n_threads: 2}
"""


def test_two_workers_without_redis_are_refused_with_what_to_do(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL)
    result = CliRunner().invoke(
        app, ["serve", "--pool", str(pool), "--workers", "2"], env={"COE_REDIS_URL": ""}
    )
    assert result.exit_code == 2
    assert "--workers 2 needs Redis" in result.output and "COE_REDIS_URL" in result.output


def test_two_workers_cannot_share_residency(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL + "max_resident: 1\n")
    result = CliRunner().invoke(
        app,
        ["serve", "--pool", str(pool), "--workers", "2"],
        env={"COE_REDIS_URL": "redis://127.0.0.1:1/0"},
    )
    assert result.exit_code == 2 and "max_resident" in result.output


def test_workers_reach_the_parents_local_experts_as_endpoints(tmp_path: Path) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL)
    data = _attached_pool(load_pool(pool), {"local": "http://127.0.0.1:5555/v1"})
    remote, local = data["experts"]
    assert remote["engine"] == "openai" and remote["base_url"] == "http://a/v1"
    assert local["engine"] == "openai" and local["base_url"] == "http://127.0.0.1:5555/v1"
    assert local["model"] == "local"
    assert not {"gguf", "chat_format", "n_threads"} & set(local)
    attached = tmp_path / "attached.yaml"
    import yaml

    attached.write_text(yaml.safe_dump(data))
    assert [e.engine for e in load_pool(attached).experts] == ["openai", "openai"]
