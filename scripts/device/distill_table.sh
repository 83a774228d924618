#!/bin/bash
# Issue 14's GPU rows, one call: mm-alt and pd at K = 4 and 8 at w = 3 (student EMA 0.99, the CPU
# table's recipe), and the guidance-conditioned mm-alt at K = 4 and 8 (w drawn from [1, 5], the
# service's range), batch $BATCH in bf16, all six side by side on one GPU. Like the CPU table
# (scripts/equal_budget.sh), each run's schedule is sized to its time box from a probed rate: a
# PROBE_S probe of all six side by side, then iters = rate x DISTILL_MINUTES (scripts/probe_rate.py), so warm-up, cosine
# decay and pd's halving stages fit the time. The packed students come back as tars under $OUT
# (the device returns at most 8 files of 16 MiB: two students a tar) and are scored on the CPU like
# the CPU rows (the CPU rows stay the reference):
#   for t in <fetched>/students-*.tar; do tar -xf $t -C runs/gpu-table; done
#   fewstep eval distill-table --runs runs/gpu-table ... (see scripts/device/README.md)
# Setup as for all.sh (scripts/device/README.md): copy scripts/device to .gpu, then
#   DISTILL_MINUTES=4.5 bash .gpu/distill_table.sh     (about 7 minutes with start-up)
# LOCAL=1 runs it here on the CPU with the venv (a dry run of the plumbing: tiny batch and minutes).
set -u
T0=$(date +%s)
if [ "${LOCAL:-0}" = 1 ]; then
  PY=.venv/bin/python
  export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
else
  PY=python3
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
  $PY .gpu/prep.py || exit 1
fi
M=${DISTILL_MINUTES:-4.5}
B=${BATCH:-256}
PROBE_S=${PROBE_S:-40}
WORKERS=${WORKERS:-3}
TMP=${TMP_DIR:-/tmp}
# name:method:K:guidance set (w3 = fixed w = 3, wc = conditioned on w in [1, 5])
RUNS=${RUNS:-"mm-alt-k8:mm-alt:8:w3 mm-alt-k4:mm-alt:4:w3 pd-k8:pd:8:w3 pd-k4:pd:4:w3 mm-alt-wc-k8:mm-alt:8:wc mm-alt-wc-k4:mm-alt:4:wc"}
COMMON="ema_decay=0.99 batch_size=$B bf16=true warmup=10 data.num_workers=$WORKERS"
W3="guidance_min=3 guidance_max=3 guidance_default=3"
WC="guidance_min=1 guidance_max=5 guidance_default=3"
mkdir -p $TMP/dlogs "$OUT"
echo "prep done $(( $(date +%s) - T0 )) s"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
set_of() { [ "$1" = wc ] && echo "$WC" || echo "$W3"; }
for r in $RUNS; do IFS=: read -r name m k g <<< "$r"
  DRUNS=$TMP/dprobe $PY .gpu/distill_one.py $name $m $k $($PY -c "print($PROBE_S / 60)") $COMMON $(set_of $g) \
    log_every=4 $( [ $m = pd ] && echo iters=48 || echo iters=100000 ) > $TMP/dlogs/probe-$name.log 2>&1 &
done
wait
echo "probe done $(( $(date +%s) - T0 )) s"
for r in $RUNS; do IFS=: read -r name m k g <<< "$r"
  rate=$($PY scripts/probe_rate.py $TMP/dprobe/$name/metrics.jsonl) \
    || { echo "probe $name failed:"; tail -n 5 $TMP/dlogs/probe-$name.log; continue; }
  n=$($PY -c "print(max(1, int($rate * $M)))")
  echo "$name $rate" >> "$OUT/rates.tsv"
  echo "$name: $n updates in $M min"
  DRUNS=$TMP/druns $PY .gpu/distill_one.py $name $m $k $($PY -c "print(1.15 * $M)") $COMMON $(set_of $g) iters=$n \
    > $TMP/dlogs/$name.log 2>&1 &
done
wait
echo "runs done $(( $(date +%s) - T0 )) s"
mkdir -p $TMP/back
for r in $RUNS; do IFS=: read -r name m k g <<< "$r"
  grep -v -i warn $TMP/dlogs/$name.log | tail -n 2
  d=$TMP/back/$name; mkdir -p $d
  cp -r $TMP/druns/$name/student $TMP/druns/$name/summary.json $TMP/druns/$name/config.json \
    $TMP/druns/$name/metrics.jsonl $d/ 2>/dev/null
  [ -d $TMP/druns/$name/student-raw ] && cp -r $TMP/druns/$name/student-raw $d/
done
# two students a tar (about 13.5 MB; the raw, non-EMA weights stay behind)
set -- $RUNS; i=0
while [ $# -gt 0 ]; do
  a=${1%%:*}; b=""; [ $# -gt 1 ] && b=${2%%:*}
  tar -C $TMP/back -cf "$OUT/students-$i.tar" --exclude=student-raw $a $b
  shift; [ $# -gt 0 ] && shift; i=$((i + 1))
done
tar -C $TMP/back -cf "$OUT/logs.tar" --exclude=student --exclude=student-raw . -C $TMP dlogs
echo "all done $(( $(date +%s) - T0 )) s"
ls -la "$OUT"
