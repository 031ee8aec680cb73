#!/usr/bin/env bash
# Builds the images the CPU stack runs, on the base that deploy/docker/base-image.sh chooses:
#   coe-local:latest       the gateway and the llama.cpp experts (Dockerfile, target `local`)
#   coe-redis:latest       Debian's redis-server
#   coe-prometheus:latest  Debian's prometheus
# Docker's layer cache keeps every step whose inputs did not change (llama.cpp compiles once).
# Builds use the host network, so pip reaches the index this machine reaches; a CPU torch
# wheel in this machine's pip find-links folder is served to the build on a loopback port.
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE=$(deploy/docker/base-image.sh)
echo "base image: $BASE" >&2
args=(--network host --build-arg "BASE=$BASE")

wheels=${COE_WHEELS_DIR:-${PIP_FIND_LINKS:-$(pip3 config get global.find-links 2>/dev/null || true)}}
server=
if [ -n "$wheels" ] && compgen -G "$wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then
  # A fixed port when free: the URL is a build argument, and a new one would void the cache.
  port=$(python3 -c '
import socket
for port in (28199, 0):
    try:
        s = socket.socket(); s.bind(("127.0.0.1", port)); print(s.getsockname()[1]); break
    except OSError:
        pass')
  python3 -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >/dev/null 2>&1 &
  server=$!
  trap 'kill "$server" 2>/dev/null || true' EXIT
  args+=(--build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/" --build-arg "TORCH_INDEX=")
  echo "torch from $wheels (served on 127.0.0.1:$port)" >&2
fi

# This machine's extra CAs (a TLS-intercepting proxy before PyPI, say) go into the build.
rm -f deploy/docker/extra-ca/*.crt
cp /usr/local/share/ca-certificates/*.crt deploy/docker/extra-ca/ 2>/dev/null || true

docker build "${args[@]}" --target local -t coe-local:latest .
docker build "${args[@]}" -f deploy/docker/services.Dockerfile --target redis -t coe-redis:latest .
docker build "${args[@]}" -f deploy/docker/services.Dockerfile --target prometheus \
  -t coe-prometheus:latest .
