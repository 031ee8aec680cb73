#!/usr/bin/env bash
# Builds the images the CPU stack runs, on the base that deploy/docker/base-image.sh chooses:
#   coe-local:latest       the gateway and the llama.cpp experts (Dockerfile, target `local`)
#   coe-redis:latest       Debian's redis-server
#   coe-prometheus:latest  Debian's prometheus
# Docker's layer cache keeps every step whose inputs did not change (llama.cpp compiles once).
# Builds use the host network, so pip reaches the index this machine reaches; wheels this
# machine has already (CPU torch, a compiled llama.cpp) are served to the build (see below).
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE=$(deploy/docker/base-image.sh)
echo "base image: $BASE" >&2
args=(--network host --build-arg "BASE=$BASE")

# Wheels this machine already has are served to the build on a loopback port: the CPU torch
# of its pip find-links folder, and the llama.cpp wheel that `make install` compiled into pip's
# cache (then the image build compiles nothing). A fixed port when free: the URL is a build
# argument, and a new one would void docker's cache.
serve=$(mktemp -d /tmp/coe-wheels.XXXXXX)
trap 'rm -rf "$serve"' EXIT
found=${COE_WHEELS_DIR:-${PIP_FIND_LINKS:-$(pip3 config get global.find-links 2>/dev/null || true)}}
for wheel in "$found"/torch-2.13.0+cpu-*.whl; do
  if [ -f "$wheel" ]; then ln -s "$wheel" "$serve/"; fi
done
cache=$(pip3 cache dir 2>/dev/null || echo "$HOME/.cache/pip")
wheel=$(find "$cache" -name 'llama_cpp_python-0.3.36-*linux_x86_64.whl' 2>/dev/null | head -1 || true)
if [ -n "$wheel" ]; then ln -s "$wheel" "$serve/"; fi
if compgen -G "$serve/*.whl" >/dev/null; then
  port=$(python3 -c '
import socket
for port in (28199, 0):
    try:
        s = socket.socket(); s.bind(("127.0.0.1", port)); print(s.getsockname()[1]); break
    except OSError:
        pass')
  python3 -m http.server --bind 127.0.0.1 --directory "$serve" "$port" >/dev/null 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true; rm -rf "$serve"' EXIT
  args+=(--build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/")
  if compgen -G "$serve/torch-*.whl" >/dev/null; then args+=(--build-arg "TORCH_INDEX="); fi
  echo "wheels served to the build on 127.0.0.1:$port: $(ls "$serve" | tr '\n' ' ')" >&2
fi

# This machine's extra CAs (a TLS-intercepting proxy before PyPI, say) go into the build.
rm -f deploy/docker/extra-ca/*.crt
cp /usr/local/share/ca-certificates/*.crt deploy/docker/extra-ca/ 2>/dev/null || true

docker build "${args[@]}" --target local -t coe-local:latest .
docker build "${args[@]}" -f deploy/docker/services.Dockerfile --target redis -t coe-redis:latest .
docker build "${args[@]}" -f deploy/docker/services.Dockerfile --target prometheus \
  -t coe-prometheus:latest .
