#!/bin/bash
# Issue 14's GPU rows, one call: mm-alt and pd at K = 4 and 8, w = 3 (student EMA 0.99, the CPU
# table's recipe), batch $BATCH in bf16, the four side by side on one GPU. Like the CPU table
# (scripts/equal_budget.sh), each run's schedule is sized to its time box from a probed rate: a
# PROBE_S probe of all four side by side, then iters = rate x DISTILL_MINUTES, so warm-up, cosine
# decay and pd's halving stages fit the time. The packed students come back under $OUT/students and
# are scored on the CPU like the CPU rows (the CPU rows stay the reference):
#   fewstep eval distill-table --students <fetched>/students --out-dir results/distill_gpu \
#     --ceiling-dir results/ceiling
# Setup as for all.sh (scripts/device/README.md): copy scripts/device to .gpu, then
#   DISTILL_MINUTES=4 bash .gpu/distill_table.sh     (about 6 minutes with start-up)
set -u
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 .gpu/prep.py || exit 1
M=${DISTILL_MINUTES:-4}
B=${BATCH:-256}
PROBE_S=${PROBE_S:-40}
RUNS="mm-alt:8 mm-alt:4 pd:8 pd:4"
SET="guidance_min=3 guidance_max=3 guidance_default=3 ema_decay=0.99 batch_size=$B bf16=true warmup=10"
mkdir -p /tmp/dlogs "$OUT/students"
echo "prep done $(( $(date +%s) - T0 )) s"
for r in $RUNS; do m=${r%:*}; k=${r#*:}
  DRUNS=/tmp/dprobe python3 .gpu/distill_one.py $m-k$k $m $k $(python3 -c "print($PROBE_S / 60)") $SET \
    $( [ $m = pd ] && echo iters=48 || echo iters=100000 ) > /tmp/dlogs/probe-$m-k$k.log 2>&1 &
done
wait
echo "probe done $(( $(date +%s) - T0 )) s"
for r in $RUNS; do m=${r%:*}; k=${r#*:}
  n=$(python3 -c "import json; s=json.load(open('/tmp/dprobe/$m-k$k/summary.json')); print(max(1, int(60 * s['iters'] / s['wall_s'] * $M)))")
  echo "$m-k$k: $n updates in $M min"
  DRUNS=/tmp/druns python3 .gpu/distill_one.py $m-k$k $m $k $(python3 -c "print(1.15 * $M)") $SET iters=$n \
    > /tmp/dlogs/$m-k$k.log 2>&1 &
done
wait
for r in $RUNS; do m=${r%:*}; k=${r#*:}
  grep -v -i warn /tmp/dlogs/$m-k$k.log | tail -n 2
  cp -r /tmp/druns/$m-k$k/student "$OUT/students/$m-k$k" && cp /tmp/druns/$m-k$k/summary.json "$OUT/students/$m-k$k.summary.json"
done
echo "all done $(( $(date +%s) - T0 )) s"
