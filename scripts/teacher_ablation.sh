#!/usr/bin/env bash
# Which change helps the teacher bind two objects? Short equal-compute runs from scratch on the
# captions of `fewstep.captions` (many phrasings), one change at a time against the shapes32-cpu
# preset: cross-attention at 32x32 too, a larger share of two-object scenes, width (48 base
# channels, given fewer steps for the same training FLOPs). Batch 32, one CPU thread per run, two
# side by side; each run is packed and scored at 16 ancestral steps, w = 3, on EVAL_IMAGES prompts
# of the fixed evaluation set (three quarters of its in-distribution prompts are two-object), with
# 95% bootstrap intervals. Then results/teacher_ablation.md (python -m distill.ablation_report --teacher).
#
#   scripts/teacher_ablation.sh       # about 60 minutes on 2 idle cores
#
# Runs already scored are kept (delete runs/teacher-ablation/<name> and its row to redo one).
set -euo pipefail
cd "$(dirname "$0")/.."
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
OUT=${OUT:-runs/teacher-ablation}
EVAL_IMAGES=${EVAL_IMAGES:-400}
STEPS=${STEPS:-1200}  # the baseline's steps; a variant of FLOPs ratio r gets STEPS / r
JOBS=${JOBS:-2}
mkdir -p "$OUT/eval"
BASE="--preset shapes32-cpu --set batch_size=32 --set threads=1 --set data.num_workers=0 --set sample_every=100000
      --set ckpt_every=200 --no-progress"

# name | steps | overrides  (wide48: 1.179 / 0.532 GFLOP per evaluation, so 0.45x the steps)
RUNS=(
  "base|$STEPS|"
  "xattn32|$STEPS|--set model.cross_attn_resolutions=[32,16,8]"
  "two60|$STEPS|--set data.p_two_objects=0.6"
  "wide48|$((STEPS * 45 / 100))|--set model.base_channels=48"
)

one() {
  IFS='|' read -r name steps overrides <<< "$1"
  row="$OUT/eval/$name.json"
  if [ -f "$row" ]; then echo "kept $name"; return; fi
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $FEWSTEP train $BASE --set steps="$steps" $overrides --out "$OUT/$name" >> "$OUT/$name.log" 2>&1
  $FEWSTEP pack --run "$OUT/$name" --out "$OUT/$name/model" >> "$OUT/$name.log" 2>&1
  OMP_NUM_THREADS=1 $FEWSTEP eval --model "$OUT/$name/model" --sampler ancestral --steps 16 --guidance 3 \
    --n-images "$EVAL_IMAGES" --threads 1 --name "$name" --out-dir "$OUT/eval" --no-progress >> "$OUT/$name.log" 2>&1
  echo "done $name"
}
export -f one
export FEWSTEP OUT EVAL_IMAGES BASE
printf '%s\n' "${RUNS[@]}" | xargs -P "$JOBS" -I{} bash -c 'one "$@"' _ {}
