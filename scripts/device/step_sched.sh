#!/bin/bash
# Issue 5 on a GPU, one call: step-level against request-level batching (fewstep bench step-sched)
# with both `fewstep serve` processes on the torch backend on CUDA. The CPU rows (BENCHMARKS.md)
# found no batching gain on the CPU, so step-level scheduling was processor sharing there; on a GPU
# an iteration of B images costs little more than one, which is the case step-level scheduling is
# for. Writes step.md, step.json and step-latency.png, the servers' and the bench's logs
# (logs.tar.gz) and env.txt to $OUT: 5 files. About 5 minutes with the defaults below.
#
# Carried (scripts/device/README.md): .gpu/whl and .gpu/whl-serve (the service's wheels for
# Python 3.12) and .gpu/step_sched (bundles/teacher-48 with its text encoder xz-packed, less the
# two files models/teacher has: scripts/device/step_sched_carry.py). The GPU machine then needs
# only its own torch, numpy and onnxruntime: no export, no transformers. The text encoder runs in
# ONNX Runtime on the CPU there (no CUDA provider; prompts are cached after the warm-up anyway).
#
#   bash scripts/device/step_sched.sh                              # on the GPU machine ($OUT set)
#   LOCAL=1 OUT=/tmp/step-dry bash scripts/device/step_sched.sh    # CPU dry run here (.venv, tiny)
#
# Knobs (environment): DEVICE (cuda), BACKEND (torch: the precision the bundle records for torch,
# bf16 autocast; torch-fp32 pins fp32), MAX_BATCH (16 images, both servers alike, as the CPU rows
# fixed 4), CLIENTS (64, the closed loop that measures capacity: 4x the batch bound, as on the
# CPU), CAPACITY_S (10), OPEN_S (18), LOADS (0.5 0.7 0.9), THREADS (4: ONNX Runtime's threads for
# the text encoder; the denoiser is on the GPU), BENCH_S (270: the bench's time box), PY, WHL, SITE.
set -euo pipefail
T0=$(date +%s)
say() { echo "[$(($(date +%s) - T0)) s] $*"; }
cd "$(dirname "$0")/../.."

LOCAL=${LOCAL:-0}
if [ "$LOCAL" = 1 ]; then
  # The same flow on this CPU: the venv's packages, the CPU, phases of a few seconds.
  PY=${PY:-.venv/bin/python} INSTALL=${INSTALL:-0} DEVICE=${DEVICE:-cpu}
  MAX_BATCH=${MAX_BATCH:-4} CLIENTS=${CLIENTS:-8} CAPACITY_S=${CAPACITY_S:-3} OPEN_S=${OPEN_S:-3}
  THREADS=${THREADS:-1} PROMPTS=${PROMPTS:-8} BENCH_S=${BENCH_S:-150}
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} FEWSTEP_BATCH_PROFILE_BUDGET_S=${FEWSTEP_BATCH_PROFILE_BUDGET_S:-1}
fi
PY=${PY:-python3}
INSTALL=${INSTALL:-1}
WHL=${WHL:-.gpu/whl .gpu/whl-serve} # folders of wheels
SITE=${SITE:-/tmp/site}
CARRY=${CARRY:-.gpu/step_sched}
WORK=${WORK:-/tmp/step_sched}
DEVICE=${DEVICE:-cuda}
BACKEND=${BACKEND:-torch}
MAX_BATCH=${MAX_BATCH:-16}
CLIENTS=${CLIENTS:-64}
CAPACITY_S=${CAPACITY_S:-10}
OPEN_S=${OPEN_S:-18}
LOADS=${LOADS:-0.5 0.7 0.9}
THREADS=${THREADS:-4}
PROMPTS=${PROMPTS:-64}
BENCH_S=${BENCH_S:-270} # 2 starts + 2 capacity + 6 open phases with their tails; step.json keeps what finished
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK/bundles" "$WORK/out"

# Whatever happens, bring back what there is: the figures written so far (step.json is rewritten
# after every phase), the logs (the servers' say why one did not start) and the environment.
pack() {
  rc=$?
  set +e
  for f in step.md step.json step-latency.png; do [ -f "$WORK/out/$f" ] && cp "$WORK/out/$f" "$OUT/"; done
  cp "$WORK/bench.log" "$WORK/out/" 2>/dev/null
  tar -C "$WORK/out" -czf "$OUT/logs.tar.gz" $(cd "$WORK/out" && ls ./*.log 2>/dev/null)
  say "exit $rc; in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
}
trap pack EXIT

# The service's packages as wheels (the GPU machine has no index): pydantic's in .gpu/whl, shared
# with the earlier GPU scripts, and fastapi, uvicorn, tokenizers, Pillow, ... in .gpu/whl-serve,
# kept apart because those scripts install all of .gpu/whl next to the machine's transformers,
# which pins its own tokenizers. Into a target directory first on PYTHONPATH, so that the versions
# tested here serve there; torch, numpy and onnxruntime stay the machine's.
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
  echo "== started $(date -u +%FT%TZ); DEVICE=$DEVICE BACKEND=$BACKEND MAX_BATCH=$MAX_BATCH CLIENTS=$CLIENTS"
  echo "   CAPACITY_S=$CAPACITY_S OPEN_S=$OPEN_S LOADS=$LOADS THREADS=$THREADS PROMPTS=$PROMPTS"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  nproc
  "$PY" - <<'PY'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "numpy", "onnxruntime", "fastapi", "starlette", "uvicorn", "pydantic", "tokenizers",
             "safetensors", "PIL", "prometheus_client", "uvloop", "httptools", "matplotlib"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"), m.__file__)
    except ImportError as e:
        print(name, "missing:", e)
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
PY
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if [ "$DEVICE" = cuda ] && ! grep -q "^cuda True" "$OUT/env.txt"; then
  echo "torch sees no CUDA device" # the servers would fail on start-up; this says why in one line
  exit 1
fi

# The bundle: the carried part, its text encoder unpacked, and the two files that equal committed
# ones (the denoiser graph, unused by the torch backend but part of the bundle, and the weights)
# from the tree. The manifest holds every file's sha256, which the servers check on loading.
cp -r "$CARRY/teacher-48" "$WORK/bundles/"
cp models/teacher/denoiser.onnx "$WORK/bundles/teacher-48/denoiser.onnx"
cp models/teacher/model.safetensors "$WORK/bundles/teacher-48/torch/model.safetensors"
"$PY" - "$WORK/bundles/teacher-48" <<'PY'
import lzma, pathlib, sys
b = pathlib.Path(sys.argv[1])
(b / "text_encoder.onnx").write_bytes(lzma.decompress((b / "text_encoder.onnx.xz").read_bytes()))
(b / "text_encoder.onnx.xz").unlink()
PY
say "bundle ready: $(du -sh "$WORK/bundles/teacher-48" | cut -f1)"

# The benchmark in its own session, so that its servers (its children) share its process group.
# At BENCH_S the group gets SIGTERM: the bench stops (no SIGINT: a background job of a script
# ignores it, and so would Python), the servers drain and exit, step.json keeps every phase that
# finished; whatever is left of the group is killed after.
SETSID=$(command -v setsid || true) # util-linux; without it the bench and its children are signalled
# shellcheck disable=SC2086
$SETSID "$PY" -m fewstep_cli bench step-sched --bundles "$WORK/bundles/teacher-48" --backend "$BACKEND" --device "$DEVICE" \
  --threads "$THREADS" --max-batch-images "$MAX_BATCH" --capacity-clients "$CLIENTS" \
  --capacity-s "$CAPACITY_S" --open-s "$OPEN_S" --loads $LOADS --prompts "$PROMPTS" \
  --out "$WORK/out" > "$WORK/bench.log" 2>&1 &
BENCH=$!
stop_bench() { # $1: the signal
  kill -"$1" -- "-$BENCH" 2>/dev/null && return
  pkill -"$1" -P "$BENCH" 2>/dev/null || true
  kill -"$1" "$BENCH" 2>/dev/null || true
}
say "bench started (pid $BENCH, time box $BENCH_S s)"
START=$(date +%s)
while kill -0 "$BENCH" 2>/dev/null; do
  sleep 2
  if [ $(($(date +%s) - START)) -ge "$BENCH_S" ]; then
    say "time box reached: SIGTERM to the bench and its servers"
    stop_bench TERM
    break
  fi
done
BENCH_RC=0
wait "$BENCH" || BENCH_RC=$?
say "bench exited $BENCH_RC"
sleep 3
stop_bench KILL # servers still draining after a time box; nothing when the bench ended by itself
grep -E "closed|open|Error|error|Traceback" "$WORK/bench.log" | grep -v -i warn | tail -n 30 || true
if [ -f "$WORK/out/step.md" ]; then
  cat "$WORK/out/step.md"
else
  tail -n 40 "$WORK/bench.log"
  for f in "$WORK"/out/serve-*.log; do
    [ -f "$f" ] && { echo "== $f"; grep -v "POST /generate" "$f" | tail -n 25; }
  done
fi
exit "$BENCH_RC"
