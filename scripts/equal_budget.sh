#!/usr/bin/env bash
# The distillation table's runs: every method at every K on the same wall-clock budget, one CPU
# thread per run and JOBS runs side by side (2 on a 2-core machine), then `fewstep eval distill-table`.
#
#   scripts/equal_budget.sh            # K = 1 2 4 8, 5 minutes a run, 500 images a row
#   KS="4 8" MINUTES=10 JOBS=1 EVAL_IMAGES=2000 scripts/equal_budget.sh
#   METHODS="mm-alt pd" KS=8 OUT=runs/equal-w1 EXTRA="--set guidance_min=1 --set guidance_max=1 \
#     --set guidance_default=1" scripts/equal_budget.sh      # a subset, at another w (one table per OUT)
#
# Every method gets the same wall time with a schedule that ends in it: a short probe of each run
# (PROBE_MINUTES, the same JOBS side by side) measures its updates per minute on this machine, and
# the run then gets iters = that rate x MINUTES, so its learning-rate warm-up and cosine decay (and
# pd's halving stages) fit the budget. A time box of 1.15 x MINUTES packs whatever a slower-than-
# probed run reached. The probed rates are written to $OUT/rates-<methods>-k-<Ks>.tsv; RATES=file reuses them.
# cd runs at K >= 4 only (multistep consistency, as the issue asks).
set -euo pipefail
cd "$(dirname "$0")/.."
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
KS=${KS:-"1 2 4 8"}
METHODS=${METHODS:-"mm-alt mm-param pd cd"}
MINUTES=${MINUTES:-5}
JOBS=${JOBS:-2}
BATCH=${BATCH:-32}
PROBE_MINUTES=${PROBE_MINUTES:-1.5}
PD_PROBE_ITERS=${PD_PROBE_ITERS:-48}  # updates of pd's probe, spread over all its stages
RATES=${RATES:-}
EVAL_IMAGES=${EVAL_IMAGES:-500}
OUT=${OUT:-runs/equal}
EXTRA=${EXTRA:-}
TABLE=${TABLE:-1}  # 0: train only (the table later, e.g. once a ceiling computed beside the runs is in)
PROBE_ONLY=${PROBE_ONLY:-0}  # 1: write the rates file and stop (to merge rates of several sets into one RATES file)

mkdir -p "$OUT"
pairs=()
for k in $KS; do
  for m in $METHODS; do
    if [ "$m" = cd ] && [ "$k" -lt 4 ]; then continue; fi
    pairs+=("$m $k")
  done
done
run_one() {
  m=$1; k=$2; name=$3; shift 3
  OMP_NUM_THREADS=1 $FEWSTEP distill --teacher models/teacher --preset shapes32-cpu --method "$m" --steps "$k" \
    --set threads=1 --set batch_size="$BATCH" --set sample_every=100000 --set warmup=10 $EXTRA "$@" \
    --no-progress --out "$OUT/$name" > "$OUT/$name.log" 2>&1 && echo "done $name" || { echo "FAILED $name (see $OUT/$name.log)"; return 1; }
}
export -f run_one
export FEWSTEP BATCH OUT EXTRA
if [ -z "$RATES" ]; then
  RATES="$OUT/rates-$(echo $METHODS k $KS | tr ' ' '-').tsv"  # one file per set, e.g. rates-mm-alt-pd-cd-k-4-8.tsv
  # pd's probe runs every halving stage: its later stages distil from the previous stage's student
  # (one evaluation a step, not the guided teacher's two) and run about 1.3x faster, so a rate from
  # the first stage alone gave pd about 80% of the budget (37 of 45 minutes at K = 8).
  printf '%s\n' "${pairs[@]}" | awk -v p="$PROBE_MINUTES" -v pdi="$PD_PROBE_ITERS" '{
      if ($1 == "pd") print $1, $2, "probe-" $1 "-k" $2, "--set", "log_every=4", "--set", "iters=" pdi, "--max-minutes", 4 * p;
      else print $1, $2, "probe-" $1 "-k" $2, "--set", "log_every=4", "--set", "iters=100000", "--max-minutes", p }' \
    | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
  # The rate is the iterations' own, from the metrics windows (scripts/probe_rate.py says why).
  for pair in "${pairs[@]}"; do
    set -- $pair
    echo "$1 $2 $(python3 scripts/probe_rate.py "$OUT/probe-$1-k$2/metrics.jsonl")"
  done > "$RATES"
  rm -rf "$OUT"/probe-*
fi
cat "$RATES"
[ "$PROBE_ONLY" = 0 ] || exit 0
awk -v mins="$MINUTES" '{n = int($3 * mins); if (n < 1) n = 1;
  printf "%s %s %s-k%s --set iters=%d --max-minutes %.2f --pack-unfinished\n", $1, $2, $1, $2, n, 1.15 * mins}' "$RATES" \
  | xargs -P "$JOBS" -L 1 bash -c 'run_one "$@"' _
[ "$TABLE" = 0 ] || $FEWSTEP eval distill-table --students "$OUT" --n-images "$EVAL_IMAGES" --no-progress
