#!/usr/bin/env bash
# Builds a local Debian bookworm base image with Python 3.11 and venv, for offline image builds
# (no registry is reachable from CI): debootstrap --variant=minbase, then `docker import`.
#   deploy/docker/build-base.sh [TAG]      default TAG: fewstep-local/python:3.11-bookworm
# Skips the work when the tag already exists (FORCE=1 rebuilds). Needs root, debootstrap, docker.
# The Dockerfile takes it with --build-arg BASE_IMAGE=TAG; so does deploy/prometheus/Dockerfile.
set -euo pipefail
TAG="${1:-fewstep-local/python:3.11-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [ "${FORCE:-0}" != 1 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "build-base: $TAG exists"
    exit 0
fi
root="$(mktemp -d "${TMPDIR:-/tmp}/fewstep-rootfs.XXXXXX")"
trap 'rm -rf "$root"' EXIT
echo "build-base: debootstrap bookworm into $root"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# Same sources as the host mirror (for images that apt-get install on top), and an empty apt cache.
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\n' "$MIRROR" "$MIRROR" >"$root/etc/apt/sources.list"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    - "$TAG"
echo "build-base: $TAG built"
