#!/usr/bin/env bash
# Why moment matching misses its targets here: short mm-alt runs at K = 8 that change one thing at a
# time (weighting, batch, learning rates, auxiliary steps, guidance range, Adam momentum), each 5
# minutes on one CPU thread, two side by side, then 500-image evaluations and results/mm_ablation.md.
#
#   scripts/mm_ablation.sh            # about 45 minutes on 2 cores
#
# Runs already evaluated are kept (delete runs/ablation/<name> to redo one).
set -euo pipefail
cd "$(dirname "$0")/.."
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
OUT=${OUT:-runs/ablation}
MINUTES=${MINUTES:-5}
EVAL_IMAGES=${EVAL_IMAGES:-500}
mkdir -p "$OUT/eval"
BASE="--teacher models/teacher --steps 8 --preset shapes32-cpu --method mm-alt --set threads=1 --set warmup=10
      --set sample_every=100000 --set iters=100000 --max-minutes $MINUTES --pack-unfinished --no-progress"
NOGUID="--set guidance_min=1 --set guidance_max=1 --set guidance_default=1"

# name | eval w | overrides
RUNS=(
  "b8-rms|3|--set batch_size=8 --set weighting=rms"
  "b8-batch|3|--set batch_size=8 --set weighting=batch"
  "b32-rms|3|--set batch_size=32 --set weighting=rms"
  "b8-batch-lr3e-4|3|--set batch_size=8 --set weighting=batch --set lr=3e-4"
  "b8-batch-lr3e-5|3|--set batch_size=8 --set weighting=batch --set lr=3e-5"
  "b8-batch-aux-lr3e-4-x2|3|--set batch_size=8 --set weighting=batch --set aux_lr=3e-4 --set aux_steps=2"
  "b8-batch-w1|1|--set batch_size=8 --set weighting=batch $NOGUID"
  "b8-batch-w1-beta1-0.9|1|--set batch_size=8 --set weighting=batch $NOGUID --set betas=[0.9,0.99]"
  "b32-batch-w1|1|--set batch_size=32 --set weighting=batch $NOGUID"
)

one() {
  IFS='|' read -r name w overrides <<< "$1"
  if [ -f "$OUT/eval/$name.json" ]; then echo "kept $name"; return; fi
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $FEWSTEP distill $BASE $overrides --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  OMP_NUM_THREADS=1 $FEWSTEP eval --model "$OUT/$name/student" --sampler ancestral --steps 8 --guidance "$w" \
    --n-images "$EVAL_IMAGES" --threads 1 --name "$name" --out-dir "$OUT/eval" --no-progress >> "$OUT/$name.log" 2>&1
  echo "done $name"
}
export -f one
export FEWSTEP OUT BASE EVAL_IMAGES
printf '%s\n' "${RUNS[@]}" | xargs -P 2 -d '\n' -I{} bash -c 'one "$@"' _ {}

# The starting point of every run: the student before any update is the teacher's conditional
# prediction (its w input is zero-initialised), i.e. the teacher at w = 1, sampled with 8 steps.
if [ ! -f "$OUT/eval/init.json" ]; then
  OMP_NUM_THREADS=1 $FEWSTEP eval --model models/teacher --sampler ancestral --steps 8 --guidance 1 \
    --n-images "$EVAL_IMAGES" --threads 1 --name init --out-dir "$OUT/eval" --no-progress > "$OUT/init.log" 2>&1
fi
${PY:-.venv/bin/python} -m distill.ablation_report "$OUT" results/mm_ablation.md
mkdir -p results/mm_ablation && cp "$OUT"/eval/*.json results/mm_ablation/   # the rows, in the evaluation schema
