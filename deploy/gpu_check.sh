#!/usr/bin/env bash
# GPU check for a lent CUDA machine (issue 7, "GPU check"): torch CUDA parity against the CPU,
# k-step sampler timings (eager, torch.compile, CUDA-graph replay) at batch 1/16/64, and the
# ONNX Runtime CUDA/TensorRT providers and native TensorRT where installed. About 4 minutes.
#
#   deploy/gpu_check.sh OUT_DIR [extra args for `fewstep bench gpu`, e.g. --model models/teacher]
#   deploy/gpu_check.sh /tmp/gpucheck --device cpu --batches 1 --steps 2 --skip compile   # CPU dry run
#
# Needs python with torch (CUDA), numpy, safetensors and pydantic; onnxruntime(-gpu) and tensorrt
# are optional (missing ones are reported and skipped). Runs from the repository root without
# installing it: the repo goes on PYTHONPATH. Writes OUT_DIR/gpu_check.{md,json} and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-.}}"
[ $# -gt 0 ] && shift
py="${PYTHON:-$(command -v python3 || command -v python)}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
mkdir -p "$out"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # torch CPU threads sleep, not spin (see BENCHMARKS.md)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
"$py" - <<'PY' || true
import importlib
for name in ("torch", "onnxruntime", "tensorrt", "pydantic", "safetensors"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')}")
    except ImportError:
        print(f"{name}: not installed")
PY
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec timeout 290 "$py" -m fewstep_cli bench gpu --out "$out" "$@"
