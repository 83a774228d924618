#!/bin/bash
# Issue 28 on a GPU, one call: serving to a latency objective (`fewstep bench slo`) with the default
# students themselves on the torch backend on CUDA. The same bursty trace (a two-state MMPP over
# one- and two-object prompts) at each load against the fixed 8-step student, the fixed 4-step
# student, a static threshold rule and the controller, one server after another on the GPU (side by
# side they would share it). On the CPU the benchmark ran under the H200's cost curve, simulated
# (results/bench/slo_h200); this is the measurement that curve stands in for. Writes slo.md,
# slo.json (and slo.png where matplotlib is; else `fewstep bench slo --report-only` draws it here),
# the bench's log and env.txt to $OUT. About 5 minutes with the defaults below.
#
# Carried (scripts/device/README.md): .gpu/whl and .gpu/whl-serve (the service's wheels for
# Python 3.12, as for step_sched.sh) and .gpu/slo (bundles/mm-alt-k8 and bundles/pd-k4 with their
# shared text encoder xz-packed once: scripts/device/slo_carry.py). The GPU machine needs only its
# own torch, numpy and onnxruntime (the text encoder runs in ONNX Runtime on its CPU).
#
#   bash scripts/device/slo.sh                              # on the GPU machine ($OUT set)
#   LOCAL=1 OUT=/tmp/slo-dry bash scripts/device/slo.sh     # CPU dry run here (.venv, seconds)
#
# Knobs (environment): DEVICE (cuda), BACKEND (torch: bf16 autocast as the bundles record; torch-fp32
# pins fp32), OBJECTIVE_MS (500), LOADS (0.3 0.5 0.7: shares of the 8-step student's capacity at its
# profiled max batch), SECONDS (15 a load and server), BURST_S (1), SERVERS (fixed-8 fixed-4 rule-x0.5
# controller), BENCH_S (300: the bench's time box), PY, WHL, SITE.
set -euo pipefail
T0=$(date +%s)
say() { echo "[$(($(date +%s) - T0)) s] $*"; }
cd "$(dirname "$0")/../.."

LOCAL=${LOCAL:-0}
if [ "$LOCAL" = 1 ]; then
  # The same flow on this CPU: the venv's packages, the bundles of the tree, a few seconds a phase.
  PY=${PY:-.venv/bin/python} INSTALL=${INSTALL:-0} DEVICE=${DEVICE:-cpu} BACKEND=${BACKEND:-onnxruntime}
  CARRY=${CARRY:-bundles} OBJECTIVE_MS=${OBJECTIVE_MS:-2000} SECONDS_PER=${SECONDS_PER:-3} LOADS=${LOADS:-0.5}
  SERVERS=${SERVERS:-fixed-8 controller} BENCH_S=${BENCH_S:-150}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
PY=${PY:-python3}
INSTALL=${INSTALL:-1}
WHL=${WHL:-.gpu/whl .gpu/whl-serve}
SITE=${SITE:-/tmp/site}
CARRY=${CARRY:-.gpu/slo}
WORK=${WORK:-/tmp/slo}
DEVICE=${DEVICE:-cuda}
BACKEND=${BACKEND:-torch}
OBJECTIVE_MS=${OBJECTIVE_MS:-500}
LOADS=${LOADS:-0.3 0.5 0.7}
SECONDS_PER=${SECONDS_PER:-15}
BURST_S=${BURST_S:-1}
SERVERS=${SERVERS:-fixed-8 fixed-4 rule-x0.5 controller}
BENCH_S=${BENCH_S:-300}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK/bundles" "$WORK/out"

pack() {
  rc=$?
  set +e
  for f in slo.md slo.json slo.png; do [ -f "$WORK/out/$f" ] && cp "$WORK/out/$f" "$OUT/"; done
  cp "$WORK/bench.log" "$OUT/" 2>/dev/null
  say "exit $rc; in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
}
trap pack EXIT

if [ "$INSTALL" = 1 ]; then
  wheels=()
  for d in $WHL; do wheels+=("$d"/*.whl); done
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "${wheels[@]}"
  export PYTHONPATH="$SITE:$PWD"
else
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
say "packages in"

{
  echo "== started $(date -u +%FT%TZ); DEVICE=$DEVICE BACKEND=$BACKEND OBJECTIVE_MS=$OBJECTIVE_MS LOADS=$LOADS"
  echo "   SECONDS_PER=$SECONDS_PER BURST_S=$BURST_S SERVERS=$SERVERS"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  nproc
  "$PY" - <<'PY'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "numpy", "onnxruntime", "pydantic", "tokenizers", "safetensors", "prometheus_client", "matplotlib"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"))
    except ImportError as e:
        print(name, "missing:", e)
try:
    import torch
    print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
except ImportError:
    print("cuda False (no torch)")
PY
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ "$DEVICE" = cuda ] && ! grep -q "^cuda True" "$OUT/env.txt"; then
  echo "torch sees no CUDA device"
  exit 1
fi

# The bundles: carried without their text encoder, which both share and which comes xz-packed once.
for b in mm-alt-k8 pd-k4; do
  cp -r "$CARRY/$b" "$WORK/bundles/"
  if [ ! -f "$WORK/bundles/$b/text_encoder.onnx" ]; then
    "$PY" -c "import lzma, pathlib, sys; pathlib.Path(sys.argv[2]).write_bytes(lzma.decompress(pathlib.Path(sys.argv[1]).read_bytes()))" \
      "$CARRY/text_encoder.onnx.xz" "$WORK/bundles/$b/text_encoder.onnx"
  fi
done
say "bundles ready: $(du -sh "$WORK/bundles" | cut -f1)"

SETSID=$(command -v setsid || true)
# shellcheck disable=SC2086
$SETSID "$PY" -m fewstep_cli bench slo --bundles "$WORK/bundles/mm-alt-k8" "$WORK/bundles/pd-k4" \
  --backend "$BACKEND" --device "$DEVICE" --objective-ms "$OBJECTIVE_MS" --loads $LOADS \
  --seconds "$SECONDS_PER" --burst-s "$BURST_S" --servers $SERVERS --out "$WORK/out" > "$WORK/bench.log" 2>&1 &
BENCH=$!
say "bench started (pid $BENCH, time box $BENCH_S s)"
START=$(date +%s)
while kill -0 "$BENCH" 2>/dev/null; do
  sleep 2
  if [ $(($(date +%s) - START)) -ge "$BENCH_S" ]; then
    say "time box reached: SIGTERM to the bench (slo.json keeps every load that finished)"
    kill -TERM -- "-$BENCH" 2>/dev/null || kill -TERM "$BENCH" 2>/dev/null || true
    break
  fi
done
BENCH_RC=0
wait "$BENCH" || BENCH_RC=$?
say "bench exited $BENCH_RC"
if [ -f "$WORK/out/slo.md" ]; then
  cat "$WORK/out/slo.md"
else
  tail -n 40 "$WORK/bench.log"
fi
exit "$BENCH_RC"
