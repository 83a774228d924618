#!/bin/bash
# Teacher architecture sweep on one GPU: 5 runs side by side, then 2-object adherence at w 2-5.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 .gpu/prep.py || exit 1
mkdir -p /tmp/runs /tmp/logs
T=${TRAIN_SECONDS:-330}
launch() { timeout $T python3 .gpu/train_one.py "$@" > /tmp/logs/$1.log 2>&1 & }
launch a-base
launch b-x32 'model.cross_attn_resolutions=[32,16,8]'
launch c-x32s16 'model.cross_attn_resolutions=[32,16,8]' 'model.self_attn_resolutions=[16,8]'
launch d-base-13k steps=13000
launch e-x32-13k 'model.cross_attn_resolutions=[32,16,8]' steps=13000
sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv; for r in /tmp/runs/*; do echo $r; tail -n 1 $r/metrics.jsonl; done
wait
for f in /tmp/logs/*.log; do echo "== $f"; grep -v Warning $f | tail -n 3; done
python3 .gpu/eval_all.py ${EVAL_IMAGES:-500}
