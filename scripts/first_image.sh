#!/usr/bin/env bash
# How long a new user waits, measured: a fresh `git clone` of this repository into a temporary
# folder, `make serve` there, and the first POST /generate that returns an image; then what the
# clone installed (the serving and export venvs) and where the time went. Writes OUT (JSON).
#
#   scripts/first_image.sh                 # RUNS="cold packages warm", this repository's HEAD
#   RUNS=warm OUT=/tmp/x.json scripts/first_image.sh /path/or/url/of/a/repo
#
# Each run is one fresh clone. The caches a clone can find are what the runs differ in; they live
# under one temporary root (CACHE_ROOT) so that the machine's own caches are neither used nor touched:
#   cold      every cache empty: uv's and pip's package caches, the pinned uv (UV_DIR), the text
#             encoder graph (EXPORT_CACHE) and the start-up tuning (TUNING_CACHE). A new machine,
#             but for torch's CPU wheel, which is a file on disk here.
#   packages  the package caches and uv warm (as a first run left them); fewstep's own caches
#             emptied: a warm package cache, what the target is set for.
#   warm      everything warm: a second clone on a machine that has served before.
# Phases are read off the files the Makefile writes (venv stamps, bundle manifests) and the
# service's "ready" log line, against the start of the clone. Runs at normal priority: on a shared
# machine the load average at the start and end of each run is recorded beside its figures.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
REPO=${1:-$HERE}
RUNS=${RUNS:-"cold packages warm"}
OUT=${OUT:-$HERE/results/install/first_image.json}
TARGET=${TARGET:-serve}
TIMEOUT_S=${TIMEOUT_S:-1200}
PROMPT=${PROMPT:-"a large red circle at the top left on a white background"}
WORK=$(mktemp -d /tmp/first-image.XXXXXX)
CACHE_ROOT=${CACHE_ROOT:-$WORK/caches}
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
MAKE_PID=

cleanup() {
    if [ -n "$MAKE_PID" ] && kill -0 "$MAKE_PID" 2>/dev/null; then
        kill -TERM -- "-$MAKE_PID" 2>/dev/null || true
        wait "$MAKE_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

for run in $RUNS; do
    case "$run" in
        cold) rm -rf "$CACHE_ROOT" ;;
        packages) rm -rf "$CACHE_ROOT/xdg/fewstep/export" "$CACHE_ROOT/xdg/fewstep/tuning.json" ;;
        warm) ;;
        *) echo "first_image.sh: RUNS names cold, packages or warm, not '$run'" >&2; exit 2 ;;
    esac
    mkdir -p "$CACHE_ROOT/uv" "$CACHE_ROOT/pip" "$CACHE_ROOT/xdg"
    clone=$WORK/clone-$run
    log=$WORK/$run.log
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    t0=$(date +%s.%N)
    git clone --quiet "$REPO" "$clone"
    t_clone=$(date +%s.%N)
    # setsid: make, the exports and the server in one process group, stopped together.
    (cd "$clone" && UV_CACHE_DIR=$CACHE_ROOT/uv PIP_CACHE_DIR=$CACHE_ROOT/pip XDG_CACHE_HOME=$CACHE_ROOT/xdg \
        FEWSTEP_PORT=$PORT exec setsid make "$TARGET") > "$log" 2>&1 &
    MAKE_PID=$!
    t_first=
    while :; do
        now=$(date +%s.%N)
        if ! kill -0 "$MAKE_PID" 2>/dev/null; then
            echo "first_image.sh: make $TARGET ($run) exited before an image; the end of its log:" >&2
            tail -n 40 "$log" >&2
            exit 1
        fi
        if python3 -c "import sys; sys.exit(float(sys.argv[1]) - float(sys.argv[2]) < $TIMEOUT_S)" "$now" "$t0"; then
            echo "first_image.sh: no image within ${TIMEOUT_S} s ($run); the end of the log:" >&2
            tail -n 40 "$log" >&2
            exit 1
        fi
        code=$(curl -s -o "$WORK/reply.json" -w '%{http_code}' -X POST "http://127.0.0.1:$PORT/generate" \
            -H 'content-type: application/json' -d "{\"prompt\": \"$PROMPT\", \"seed\": 3}" || true)
        if [ "$code" = 200 ] && grep -q '"b64"' "$WORK/reply.json"; then
            t_first=$(date +%s.%N)
            break
        fi
        sleep 0.25
    done
    load_end=$(cut -d' ' -f1-3 /proc/loadavg)
    cpu=$(python3 "$HERE/scripts/first_image_record.py" --cpu-of "$MAKE_PID")
    kill -TERM -- "-$MAKE_PID" 2>/dev/null || true
    wait "$MAKE_PID" 2>/dev/null || true
    MAKE_PID=
    python3 "$HERE/scripts/first_image_record.py" --out "$OUT" --run "$run" --clone "$clone" --log "$log" \
        --t0 "$t0" --t-clone "$t_clone" --t-first "$t_first" --load-start "$load_start" --load-end "$load_end" \
        --cache-root "$CACHE_ROOT" --reply "$WORK/reply.json" --cpu-seconds "$cpu"
    rm -rf "$clone"
done
