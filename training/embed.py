"""Embedding a dataset's prompts the way the gateway embeds a live query."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from router.base import Router
from router.embedder import (
    Embedder,
    EmbedderMismatchError,
    check_recorded,
    load_embedder,
    requested_embedder,
    resolve_embedder,
)
from router.query import MAX_ROUTING_CHARS
from training.errors import CoeTrainingError

__all__ = [
    "DEFAULT_CACHE_DIR",
    "artifact_embedder",
    "embed_prompts",
    "lexical_embeddings",
    "training_embedder",
]

#: Where `coe train`/`coe eval` keep embeddings between runs unless told otherwise.
DEFAULT_CACHE_DIR = Path(".cache/coe/embeddings")


def training_embedder(cache_dir: Path | None, name: str | None = None) -> Embedder:
    """The embedder the training commands embed with: `name`, else `COE_EMBEDDER`, else
    `minilm` (`router.embedder.load_embedder`), caching to `cache_dir`."""
    return load_embedder(cache_dir, name)


def artifact_embedder(router: Router, path: Path, cache_dir: Path | None) -> Embedder:
    """The embedder to embed queries for the trained `router` (read from `path`) with: the one
    its training vectors were made with when it records it, else as `training_embedder`.

    Raises `CoeTrainingError` when `COE_EMBEDDER` names another than the recorded one, or the
    recorded name now means another model."""
    recorded = router.embedder_
    try:
        name = None if recorded is None else resolve_embedder(requested_embedder(), recorded)
        embedder = training_embedder(cache_dir, name)
        check_recorded(embedder, recorded)
    except EmbedderMismatchError as exc:
        raise CoeTrainingError(f"{path}: {exc}") from exc
    return embedder


def embed_prompts(
    prompts: Sequence[str],
    embedder: Embedder | None = None,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    description: str = "embedding",
    show_progress: bool = True,
) -> np.ndarray:
    """Embed the routing text of each prompt (its tail, as `router.query.routing_text` keeps).

    A rich progress bar shows when `show_progress` is set and there is something to embed.
    """
    embedder = embedder or training_embedder(cache_dir)
    texts = [p.strip()[-MAX_ROUTING_CHARS:] for p in prompts]
    if not show_progress:
        return embedder.embed(texts)
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(description, total=len(texts))

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return embedder.embed(texts, progress=update)


def lexical_embeddings(
    fit_prompts: Sequence[str], *others: Sequence[str], dims: int = 64
) -> list[np.ndarray]:
    """Unit-norm TF-IDF + SVD (`dims`) vectors of `fit_prompts` and of each of `others`, the
    vocabulary and projection learned from `fit_prompts` only (a training file's).

    A benchmark's stand-in where the sentence embeddings are not computed yet (seconds on a
    CPU instead of minutes): the figures it gives are a lexical router's, not the gateway's.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(max_features=20_000).fit(fit_prompts)
    words = vectorizer.transform(fit_prompts)
    svd = TruncatedSVD(min(dims, words.shape[1] - 1), random_state=0).fit(words)
    out = []
    for texts in (fit_prompts, *others):
        x = svd.transform(vectorizer.transform(texts))
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        out.append(np.asarray(x / np.where(norms > 0, norms, 1.0), dtype=np.float32))
    return out
