#!/usr/bin/env bash
# System packages the end-to-end tests need, installed only when missing (called by .ci/run).
#   prometheus: a real Prometheus scrapes the live service; promtool checks a live scrape.
#   chromium:   the playground page is clicked through in headless Chromium (driven by playwright).
#   docker.io:  the Docker Engine (dockerd) the live compose test starts (tests/deploy); the test
#               starts and stops the daemon itself, nothing is started here.
#   debootstrap: the local base image of the offline image builds (deploy/docker/build-base.sh).
#   gdb:        the stacks of a test process that crashed (scripts/crash-report.sh, from .ci/run).
# Each is optional for `make test`: the tests that need one skip with a reason when it is absent,
# so a machine without root or without Debian still runs everything else. This script, though,
# exits non-zero whenever a tool is still missing when it is done (no apt-get, no root, a failed
# install): .ci/run stops there instead of running a suite whose tests would skip.
set -euo pipefail

tools=(prometheus promtool chromium dockerd debootstrap gdb)
still_missing() {
    local t out=()
    for t in "${tools[@]}"; do command -v "$t" >/dev/null 2>&1 || out+=("$t"); done
    echo "${out[*]}"
}

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v gdb >/dev/null 2>&1 || need+=(gdb)

if [ ${#need[@]} -eq 0 ]; then
    echo "install-system-deps: prometheus, promtool, chromium, dockerd, debootstrap and gdb are present"
    exit 0
fi
# Deduplicate (prometheus is listed twice when both binaries are missing).
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: no apt-get; missing ${need[*]} (install them by hand)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-system-deps: not root and no sudo; missing ${need[*]}" >&2
        exit 1
    fi
fi
echo "install-system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps Chromium's and Prometheus's footprint small; the services that
# Debian would start (prometheus.service, docker.service) are not started in a container without
# systemd anyway.
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"

missing="$(still_missing)"
if [ -n "$missing" ]; then
    echo "install-system-deps: installed ${need[*]}, but still missing: $missing" >&2
    exit 1
fi
echo "install-system-deps: prometheus, promtool, chromium, dockerd, debootstrap and gdb are present"
