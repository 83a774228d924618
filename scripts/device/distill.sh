#!/bin/bash
# Students on one GPU, side by side, time-boxed; then evaluation at 500 images. Run after gpu_check.
set -u

mkdir -p /tmp/druns /tmp/dlogs
M=${DISTILL_MINUTES:-2.2}
run() { python3 .gpu/distill_one.py "$@" > /tmp/dlogs/$1.log 2>&1 & }
run mmalt-k8 mm-alt 8 $M
run mmalt-k4 mm-alt 4 $M
run mmparam-k8 mm-param 8 $M
sleep 40; for r in /tmp/druns/*; do echo $r; tail -n 1 $r/metrics.jsonl; done
wait
for f in /tmp/dlogs/*.log; do echo "== $f"; grep -v -i warn $f | tail -n 2; done
python3 .gpu/eval_students.py ${EVAL_IMAGES:-500}
