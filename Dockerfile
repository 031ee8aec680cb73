# The coe gateway for a GPU host (see docker-compose.yml). The experts run in their own vLLM
# containers, so this image needs no GPU: the CPU build of torch runs the query embedder.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The CPU build of torch first, in its own layer: an unpinned torch pulls a multi-GB CUDA build,
# and this layer stays cached while the code changes.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

# No `local` extra: llama.cpp experts are for laptops; a GPU host serves experts with vLLM.
COPY . .
RUN pip install '.[embed]'

RUN useradd --create-home --uid 10001 coe \
    && mkdir -p /app/.coe \
    && chown coe:coe /app/.coe
USER coe

# Defaults for a container; docker-compose.yml sets them too, so both stay explicit.
ENV COE_POOL=/app/config/vllm.yaml \
    COE_HOST=0.0.0.0 \
    COE_PORT=8000

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://localhost:{os.environ.get('COE_PORT', '8000')}/health\", timeout=4)"]

CMD ["coe", "serve"]
