#!/usr/bin/env bash
# Which change helps the teacher bind two objects? Short equal-compute runs, one change at a time,
# each scored on two-object adherence with 95% intervals (results/teacher_ablation.md).
#
# From scratch, a 25 CPU-minute run (1,200 steps at batch 32) does not get off the floor (the
# `scratch` row: one-object adherence 0.03), so the runs warm-start from the committed teacher
# (`init_from`; layers it lacks start as identities, their outputs being zero-initialised) and
# train on the varied captions with text.max_tokens = 40 (the longest caption is 33 tokens):
#   ft-base     the captions alone (two-object share 0.4, as trained)
#   ft-two70    two-object scenes 0.7 of the data
#   ft-xattn32  cross-attention at 32x32 too (the UNet's full resolution)
# Batch 32, lr 3e-4, STEPS each, one CPU thread per run, JOBS side by side; each run is packed and
# scored at 16 ancestral steps, w = 3, on EVAL_IMAGES prompts of the evaluation set; the committed
# teacher itself is the `start` row. Then the serving cost of each (fewstep bench model-cost) and
# the table (python -m distill.reports.teacher).
#
#   scripts/teacher_ablation.sh       # about 45 minutes on 2 idle cores
#
# Runs already scored are kept (delete runs/teacher-ablation/<name> and its row to redo one).
set -euo pipefail
cd "$(dirname "$0")/.."
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/teacher-ablation}
EVAL_IMAGES=${EVAL_IMAGES:-400}
STEPS=${STEPS:-1000}
JOBS=${JOBS:-3}
mkdir -p "$OUT/eval"
BASE="--preset shapes32-cpu --set init_from=models/teacher --set text.max_tokens=40 --set batch_size=32
      --set optim.lr=3e-4 --set optim.warmup_steps=50 --set threads=1 --set data.num_workers=0
      --set sample_every=100000 --set ckpt_every=250 --no-progress"

# name | overrides
RUNS=(
  "ft-base|"
  "ft-two70|--set data.p_two_objects=0.7"
  "ft-xattn32|--set model.cross_attn_resolutions=[32,16,8]"
)

score() {  # model dir, row name
  OMP_NUM_THREADS=1 $FEWSTEP eval --model "$1" --sampler ancestral --steps 16 --guidance 3 \
    --n-images "$EVAL_IMAGES" --threads 1 --name "$2" --out-dir "$OUT/eval" --no-progress
}

one() {
  IFS='|' read -r name overrides <<< "$1"
  if [ -f "$OUT/eval/$name.json" ]; then echo "kept $name"; return; fi
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $FEWSTEP train $BASE --set steps="$STEPS" $overrides --out "$OUT/$name" >> "$OUT/$name.log" 2>&1
  $FEWSTEP pack --run "$OUT/$name" --out "$OUT/$name/model" >> "$OUT/$name.log" 2>&1
  score "$OUT/$name/model" "$name" >> "$OUT/$name.log" 2>&1
  echo "done $name"
}
export -f one score
export FEWSTEP OUT EVAL_IMAGES BASE STEPS
printf '%s\n' "${RUNS[@]}" | xargs -P "$JOBS" -I{} bash -c 'one "$@"' _ {}
if [ ! -f "$OUT/eval/start.json" ]; then
  mkdir -p "$OUT/start" && cp models/teacher/config.json "$OUT/start/config.json"
  ln -sfn "$(pwd)/models/teacher" "$OUT/start/model"
  score models/teacher start >> "$OUT/start.log" 2>&1
fi
models=()
for d in "$OUT"/*/model; do models+=("$d"); done
$PY -m fewstep_cli bench model-cost "${models[@]}" --out "$OUT/cost.json"
$PY -m distill.reports.teacher "$OUT" results/teacher_ablation.md
