#!/usr/bin/env bash
# Does moment matching need longer training here? mm-alt runs at batch 32 (the equal-budget table's
# setting), each resumed in slices and evaluated after 100, 250, 500 and 1,000 updates: at K = 8
# with the guidance range w in [1, 5] (evaluated at w = 3) and with w fixed at 1 (evaluated at
# w = 1, the setting whose 5-minute run beat its start in results/mm_ablation.md), and at K = 4
# with w in [1, 5]. One CPU thread per run, two side by side, then results/mm_length.md and its plot.
#
#   scripts/mm_length.sh              # about 1 h 50 min on 2 cores
#
# Slices already evaluated are kept (delete runs/length/<name> and its eval rows to redo a run).
set -euo pipefail
cd "$(dirname "$0")/.."
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
OUT=${OUT:-runs/length}
EVAL_IMAGES=${EVAL_IMAGES:-500}
SLICES=${SLICES:-"100 250 500 1000"}
mkdir -p "$OUT/eval"
BASE="--teacher models/teacher --preset shapes32-cpu --method mm-alt --set threads=1 --set warmup=10
      --set sample_every=100000 --set iters=100000 --set batch_size=32 --pack-unfinished --no-progress"
NOGUID="--set guidance_min=1 --set guidance_max=1 --set guidance_default=1"

# name | K | eval w | overrides
RUNS=(
  "b32-w1to5|8|3|"
  "b32-w1|8|1|$NOGUID"
  "k4-b32-w1to5|4|3|"
)

one() {
  IFS='|' read -r name k w overrides <<< "$1"
  for n in $SLICES; do
    row="$OUT/eval/$name-it$n.json"
    if [ -f "$row" ]; then echo "kept $name at $n"; continue; fi
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 $FEWSTEP distill $BASE --steps "$k" $overrides --stop-at "$n" --out "$OUT/$name" \
      >> "$OUT/$name.log" 2>&1
    OMP_NUM_THREADS=1 $FEWSTEP eval --model "$OUT/$name/student" --sampler ancestral --steps "$k" --guidance "$w" \
      --n-images "$EVAL_IMAGES" --threads 1 --name "$name-it$n" --out-dir "$OUT/eval" --no-progress \
      >> "$OUT/$name.log" 2>&1
    cp "$OUT/$name/summary.json" "$OUT/eval/$name-it$n.summary"
    echo "done $name at $n"
  done
}
export -f one
export FEWSTEP OUT BASE EVAL_IMAGES SLICES
printf '%s\n' "${RUNS[@]}" | xargs -P 2 -d '\n' -I{} bash -c 'one "$@"' _ {}

# The starting point (the teacher's conditional prediction at 8 ancestral steps, w = 1): the same row
# as the ablation's, so it is reused when that one exists.
if [ ! -f "$OUT/eval/init.json" ]; then
  if [ -f results/mm_ablation/init.json ]; then
    cp results/mm_ablation/init.json "$OUT/eval/init.json"
  else
    OMP_NUM_THREADS=1 $FEWSTEP eval --model models/teacher --sampler ancestral --steps 8 --guidance 1 \
      --n-images "$EVAL_IMAGES" --threads 1 --name init --out-dir "$OUT/eval" --no-progress > "$OUT/init.log" 2>&1
  fi
fi
# ... and the K = 4 run's start (the teacher at w = 1 with 4 ancestral steps).
if [ ! -f "$OUT/eval/init-k4.json" ]; then
  OMP_NUM_THREADS=1 $FEWSTEP eval --model models/teacher --sampler ancestral --steps 4 --guidance 1 \
    --n-images "$EVAL_IMAGES" --threads 1 --name init-k4 --out-dir "$OUT/eval" --no-progress > "$OUT/init-k4.log" 2>&1
fi
${PY:-.venv/bin/python} -m distill.reports.ablation --length "$OUT" results/mm_length.md
mkdir -p results/mm_length && cp "$OUT"/eval/*.json "$OUT"/eval/*.summary results/mm_length/
