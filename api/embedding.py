"""Embedding on the request path: an LRU cache and micro-batching of concurrent queries.

One embedding call costs ~13 ms on two CPU cores whether it holds one text or a few dozen, and
parallel calls only fight over the cores. So queries that arrive while a batch is running wait
for the next batch and are embedded together, one batch at a time, in a worker thread; repeated
texts are answered from memory. (`router.embedder`'s disk cache is for training, where the same
prompts come back run after run; a disk write per request would be waste here.)
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from experts.shutdown import SHUTDOWN_TIMEOUT_S, cancel_and_wait

__all__ = ["BatchingEmbedder", "ScoreBatcher", "SyncEmbedder"]


class SyncEmbedder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class BatchingEmbedder:
    """`await embed_one(text)` → the text's vector, batched with whatever else is waiting."""

    def __init__(
        self,
        embedder: SyncEmbedder,
        max_batch: int = 64,
        cache_size: int = 4096,
        shutdown_timeout_s: float = SHUTDOWN_TIMEOUT_S,
    ) -> None:
        self.embedder = embedder
        self.shutdown_timeout_s = shutdown_timeout_s  # bounds stopping the worker in `aclose`
        self.max_batch = max_batch
        self.cache_size = cache_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0

    async def embed_one(self, text: str) -> np.ndarray:
        if (hit := self._cache.get(text)) is not None:
            self._cache.move_to_end(text)
            return hit
        if self._worker is None or self._worker.done():  # supervised: a dead worker restarts
            self._worker = asyncio.create_task(self._run(), name="coe-embedder")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((text, future))
        return await future

    async def _run(self) -> None:
        """Embed batch after batch. Whatever goes wrong with one batch (the model raises,
        returns the wrong number of vectors) fails that batch's waiters only; the worker goes
        on, and should it die anyway, the next `embed_one` starts another."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < self.max_batch:
                batch.append(self._queue.get_nowait())
            try:
                self._answer(batch, await self._embed(batch))
            except Exception as exc:  # hand the failure to this batch's waiters, keep serving
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)

    async def _embed(
        self, batch: list[tuple[str, asyncio.Future[np.ndarray]]]
    ) -> dict[str, np.ndarray]:
        texts = list(dict.fromkeys(text for text, _ in batch))
        vectors = await asyncio.to_thread(self.embedder.embed, texts)
        if len(vectors) != len(texts):
            raise ValueError(f"the embedder gave {len(vectors)} vectors for {len(texts)} texts")
        self.batches += 1
        return dict(zip(texts, vectors, strict=True))

    def _answer(
        self, batch: list[tuple[str, asyncio.Future[np.ndarray]]], by_text: dict[str, np.ndarray]
    ) -> None:
        for text, future in batch:
            if not future.done():
                future.set_result(by_text[text])
        for text, vector in by_text.items():
            self._cache[text] = vector
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    async def aclose(self) -> None:
        if self._worker is not None:
            await cancel_and_wait(self._worker, self.shutdown_timeout_s, "the embedding worker")
            self._worker = None


class ScoreBatcher:
    """`await score(router, vector, text)` → the router's row for that query, scored in one call
    with every other query whose embedding arrived in the same turn of the event loop.

    `BatchingEmbedder` answers a whole batch of waiting queries at once; their tasks resume one
    after another in the same loop turn, and each would score a single row. Scoring is numpy
    over the training set (a kNN matrix product, a classifier), so one call on the stacked rows
    costs about what one row does: the score is deferred to the end of the turn and done once.

    A row is also remembered (LRU, `cache_size` rows): a fitted router's score is a function of
    the query's vector and text, so a question asked again (a retry, the same prompt from many
    clients) is not scored again. The kNN product reads all 5,608 training vectors (8.6 MB at full
    width, which on a loaded machine come from memory, not cache: ~1.2 ms of a hit's ~2.5 ms of
    CPU, measured; 1.4 MB in the default ensemble's 64 dims, `router.neighbours`). A router that
    learns while serving (`online_updates_`) is remembered per update, so a row never outlives
    the weights it came from. Remembered rows are read-only.
    """

    def __init__(self, cache_size: int = 4096) -> None:
        self._pending: dict[int, tuple[_Scorer, list[tuple[np.ndarray, str, _Row]]]] = {}
        self._scheduled = False
        self.calls = 0
        self.cache_size = cache_size
        self._rows: OrderedDict[tuple[object, ...], np.ndarray] = OrderedDict()

    @staticmethod
    def _key(router: _Scorer, vector: np.ndarray, text: str) -> tuple[object, ...]:
        return (router, getattr(router, "online_updates_", 0), text, vector.tobytes())

    async def score(self, router: _Scorer, vector: np.ndarray, text: str) -> np.ndarray:
        key = self._key(router, vector, text)
        if (row := self._rows.get(key)) is not None:
            self._rows.move_to_end(key)
            return row
        loop = asyncio.get_running_loop()
        future: _Row = loop.create_future()
        self._pending.setdefault(id(router), (router, []))[1].append((vector, text, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, {}
        for router, items in pending.values():
            self.calls += 1
            try:
                rows = router.score(np.stack([v for v, _, _ in items]), [t for _, t, _ in items])
            except Exception as exc:  # every waiter gets the failure
                for _, _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (vector, text, future), scored in zip(items, rows, strict=True):
                row = np.array(scored)  # its own copy: the remembered row shares nothing
                row.flags.writeable = False
                self._remember(self._key(router, vector, text), row)
                if not future.done():
                    future.set_result(row)

    def _remember(self, key: tuple[object, ...], row: np.ndarray) -> None:
        if self.cache_size <= 0:
            return
        self._rows[key] = row
        while len(self._rows) > self.cache_size:
            self._rows.popitem(last=False)


class _Scorer(Protocol):
    def score(self, embeddings: np.ndarray, queries: Sequence[str]) -> np.ndarray: ...


_Row = asyncio.Future[np.ndarray]
