#!/usr/bin/env bash
# `make compose-test`: docker up (installed and started when missing), the images built (cached
# by docker between runs), then tests/deploy/test_stack.py brings the CPU stack up, uses it and
# tears it down. Safe to run again and again; prints how long the build and the test took.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null \
    || ! command -v debootstrap >/dev/null; then
  $SUDO apt-get update -qq >/dev/null
  # Debian ships compose v1 (docker-compose 1.29); the v2 plugin is not packaged in bookworm.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq docker.io docker-compose \
    debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: /var/log/dockerd.log" >&2; exit 1; }
fi

start=$(date +%s)
deploy/docker/build.sh
built=$(date +%s)
"$PY" -m pytest -m docker tests/deploy/test_stack.py -p no:cacheprovider -s -q
done_=$(date +%s)
echo "compose-test: images built in $((built - start)) s, stack tested in $((done_ - built)) s" >&2
