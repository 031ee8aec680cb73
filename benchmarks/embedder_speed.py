"""Embeddings per second of the default embedder (MiniLM on the CPU), by batch and text length.

    .venv/bin/python benchmarks/embedder_speed.py

No cache is used (every text is new). Short texts are one-line questions (~60 characters); long
ones are 1,200 characters, the most of a user turn the router keeps (about 256 word pieces,
MiniLM's limit). Prints a table; numbers depend on what else the machine is running.
"""

from __future__ import annotations

import time

from router.embedder import SentenceTransformerEmbedder

SHORT = "What is the boiling point of water at sea level, question {i}?"
LONG = ("Consider the following problem statement carefully before answering. " * 20)[:1150]


def rate(embedder: SentenceTransformerEmbedder, texts: list[str], batch: int) -> float:
    embedder.batch_size = batch
    start = time.perf_counter()
    if batch == 1:
        for text in texts:
            embedder.embed_batch([text])
    else:
        embedder.embed_batch(texts)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    import torch

    embedder = SentenceTransformerEmbedder()
    start = time.perf_counter()
    embedder.embed_batch(["warm up"])
    print(
        f"model load + first call: {time.perf_counter() - start:.1f} s, "
        f"torch threads {torch.get_num_threads()}"
    )
    print("| texts | batch | embeddings/s |\n|---|---|---|")
    for label, template, n in (("short", SHORT, 256), ("long", LONG, 64)):
        texts = [f"{template.format(i=i)} {i}" for i in range(n)]
        for batch in (1, 32, 128):
            print(f"| {label} | {batch} | {rate(embedder, texts, batch):.0f} |")


if __name__ == "__main__":
    main()
