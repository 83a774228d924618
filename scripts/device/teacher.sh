#!/bin/bash
# One GPU call (issue 15): teacher variants side by side for the same wall time, warm-started from
# the composing teacher; then each is scored at 16 ancestral steps, w = 3, packed and brought back
# with the chosen one's fp32 parity reference (scripts/device/teacher.py). About 8 minutes:
#   TRAIN_S=330 EVAL_N=2000 bash .gpu/teacher.sh          # on the GPU machine, .gpu carried
#   DEV=cpu TRAIN_S=100 EVAL_N=40 PROBE_STEPS=4 WORKERS=1 RESAMPLES=20 EXTRA=batch_size=8 PY=.venv/bin/python bash .gpu/teacher.sh  # CPU dry run
set -u
export T_START=$(date +%s)
if [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
[ -f .gpu/minilm/model16.safetensors.gz ] && [ "${DEV:-cuda}" = cuda ] && { $PY .gpu/prep.py || exit 1; }
export OUT=${OUT:-/tmp/out} RUNS=${RUNS:-/tmp/truns}
mkdir -p $OUT $RUNS
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
echo "prep done $(( $(date +%s) - T_START )) s"
T=${TRAIN_S:-330}
launch() { timeout $(( T + 40 )) $PY .gpu/teacher.py train "$@" > $RUNS/$1.log 2>&1 & }
launch b256 batch_size=256 threads=2 ${EXTRA:-}
launch b512 batch_size=512 optim.lr=0.001 threads=2 ${EXTRA:-}
sleep $(( T / 4 )); nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
for r in $RUNS/b*/metrics.jsonl; do echo $r; tail -n 1 $r; done
wait
for f in $RUNS/*.log; do echo "== $f"; grep -v -i warn $f | tail -n 4; done
echo "training done $(( $(date +%s) - T_START )) s"
timeout ${FINISH_S:-150} $PY .gpu/teacher.py finish b256 b512 2>&1 | grep -v -i warn
cat $RUNS/*.log > $OUT/train_logs.txt
echo "all done $(( $(date +%s) - T_START )) s"
