#!/usr/bin/env bash
# Which correction makes moment matching work: mm-alt runs at K = 8 and a fixed w = 3 (the students'
# serving setting, so every row is compared with the teacher at that same w) that change one thing at
# a time against a base (the `batch` weighting with a student EMA), each on one CPU thread for the
# same number of updates (UPDATES, about MINUTES of this machine: the cosine schedule spans exactly the
# run), two side by side, then EVAL_IMAGES-image evaluations, paired comparisons with the base
# (`fewstep eval compare`, 95% intervals) and results/mm_ablation.md.
#
#   scripts/mm_ablation.sh                 # 7 runs of ~15 minutes and 1,000-image rows: ~1 h 15 on 2 cores
#   MINUTES=30 EVAL_IMAGES=2000 scripts/mm_ablation.sh
#
# Runs already evaluated are kept (delete runs/ablation/<name> and its eval row to redo one).
set -euo pipefail
cd "$(dirname "$0")/.."
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
OUT=${OUT:-runs/ablation}
MINUTES=${MINUTES:-15}
# mm-alt updates a minute at batch 32 on one thread of the 2-core development VM (about 3 s each)
UPDATES_PER_MINUTE=${UPDATES_PER_MINUTE:-20}
UPDATES=${UPDATES:-$((UPDATES_PER_MINUTE * MINUTES))}
EVAL_IMAGES=${EVAL_IMAGES:-1000}
mkdir -p "$OUT/eval" results/mm_ablation
W3="--set guidance_min=3 --set guidance_max=3 --set guidance_default=3"
BASE="--teacher models/teacher --steps 8 --preset shapes32-cpu --method mm-alt --set threads=1 --set warmup=10
      --set sample_every=100000 --set batch_size=32 $W3 --set ema_decay=0.99 --no-progress"

# name | overrides (each against the base: one change at a time); aux-x2 does twice the auxiliary work
# per update, so it gets two thirds of the updates (the same time)
RUNS=(
  "base|--set weighting=batch --set iters=$UPDATES"
  "rms|--set weighting=rms --set iters=$UPDATES"
  "no-ema|--set weighting=batch --set ema_decay=0 --set iters=$UPDATES"
  "aux-teacher|--set weighting=batch --set aux_weighting=teacher --set iters=$UPDATES"
  "sbin|--set weighting=sbin --set iters=$UPDATES"
  "snr-cap|--set weighting=snr-cap --set iters=$UPDATES"
  "grid|--set weighting=batch --set time_sampling=grid --set iters=$UPDATES"
  "aux-x2|--set weighting=batch --set aux_steps=2 --set iters=$((UPDATES * 2 / 3))"
)

one() {
  IFS='|' read -r name overrides <<< "$1"
  if [ -f "$OUT/eval/$name.json" ]; then echo "kept $name"; return; fi
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $FEWSTEP distill $BASE $overrides --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  OMP_NUM_THREADS=1 $FEWSTEP eval --model "$OUT/$name/student" --sampler ancestral --steps 8 --guidance 3 \
    --n-images "$EVAL_IMAGES" --threads 1 --name "$name" --out-dir "$OUT/eval" --no-progress >> "$OUT/$name.log" 2>&1
  echo "done $name"
}
# ONLY="base rms ..." runs a subset (a session too short for all of them; the rest run later).
if [ -n "${ONLY:-}" ]; then
  kept=()
  for r in "${RUNS[@]}"; do case " $ONLY " in *" ${r%%|*} "*) kept+=("$r") ;; esac; done
  RUNS=("${kept[@]}")
fi
export -f one
export FEWSTEP OUT BASE EVAL_IMAGES
printf '%s\n' "${RUNS[@]}" | xargs -P 2 -d '\n' -I{} bash -c 'one "$@"' _ {}

# The starting point of every run: before any update the student is the teacher's conditional
# prediction (its w input is zero-initialised), i.e. the teacher at w = 1, sampled with 8 steps.
if [ ! -f "$OUT/eval/init.json" ]; then
  $FEWSTEP eval --model models/teacher --sampler ancestral --steps 8 --guidance 1 \
    --n-images "$EVAL_IMAGES" --name init --out-dir "$OUT/eval" --no-progress > "$OUT/init.log" 2>&1
fi
for row in "$OUT"/eval/*.json; do
  name=$(basename "$row" .json)
  case $name in base|init) continue ;; esac
  $FEWSTEP eval compare "$OUT/eval/base.json" "$row" --out-dir results/mm_ablation --name "base-vs-$name" \
    --no-progress > /dev/null
done
${PY:-.venv/bin/python} -m distill.reports.ablation "$OUT" results/mm_ablation.md
cp "$OUT"/eval/*.json results/mm_ablation/   # the rows, in the evaluation schema
