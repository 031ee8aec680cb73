#!/usr/bin/env bash
# The image every coe image builds FROM, printed on stdout (progress goes to stderr).
#
#   BASE=$(deploy/docker/base-image.sh)
#
# 1. $COE_BASE_IMAGE when set (any image with Debian's apt and python3 >= 3.11);
# 2. the public python:3.11-slim when a registry answers (pulled once, then cached);
# 3. else a minimal Debian bookworm with python3 (3.11), debootstrapped from the apt mirror this
#    machine uses and `docker import`ed as coe-base:bookworm, built once and kept by docker.
set -euo pipefail
PUBLIC=python:3.11-slim
LOCAL=coe-base:bookworm

if [ -n "${COE_BASE_IMAGE:-}" ]; then echo "$COE_BASE_IMAGE"; exit 0; fi
if docker image inspect "$PUBLIC" >/dev/null 2>&1; then echo "$PUBLIC"; exit 0; fi
if docker image inspect "$LOCAL" >/dev/null 2>&1; then echo "$LOCAL"; exit 0; fi
if timeout 60 docker pull -q "$PUBLIC" >/dev/null 2>&1; then echo "$PUBLIC"; exit 0; fi

echo "no registry answered: building $LOCAL with debootstrap" >&2
# The mirror apt already uses (deb822 or one-line sources), so this works where apt works.
mirror=$(grep -hoE '^URIs: *http[^ ]*|^deb +http[^ ]*' /etc/apt/sources.list.d/*.sources \
  /etc/apt/sources.list 2>/dev/null | grep -v security | head -1 | grep -oE 'http[^ ]*' || true)
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /tmp/coe-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "$mirror" >&2
# Security updates and the same mirror inside the image; no apt caches in the layer.
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
SOURCES
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$LOCAL" >&2
echo "$LOCAL"
