#!/bin/bash
# One GPU call: the issue-7 GPU check (time-boxed), then moment-matching students side by side
# (time-boxed), their packed weights copied out first, then a 500-image evaluation.
set -u
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 .gpu/prep.py || exit 1
echo "prep done $(( $(date +%s) - T0 )) s"
bash deploy/gpu_check.sh $OUT/gpucheck --model models/teacher --budget-s ${CHECK_BUDGET:-55} --repeats 5 --steps 8 2>&1 | tail -n 45
echo "check done $(( $(date +%s) - T0 )) s"
bash .gpu/distill.sh
echo "all done $(( $(date +%s) - T0 )) s"
