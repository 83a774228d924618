#!/usr/bin/env bash
# The moment-matching recipe, chosen by a combined ablation at equal training image passes
# (docs/results: "Choosing the recipe"). mm-alt at K = 8 in its served form (conditioned on w in
# [1, 5], student EMA 0.99), every arm given the same BUDGET of training images (`--budget-images`:
# a guided warm-start update draws one batch, an mm-alt update two, so arms compare at equal data and
# about equal compute), each arm changing one thing against `base` (the recipe every earlier table
# used: weighting=batch, plain auxiliary, p_two_objects = 0.4, no warm start); the base runs at two
# seeds (network init, noise and data stream) to show run-to-run spread. One CPU thread a run, JOBS
# side by side; then EVAL_IMAGES-image evaluations at w = 3 and paired comparisons with the base
# (`fewstep eval compare`, 95% intervals), and results/mm_recipe.md.
#
#   scripts/mm_recipe.sh                       # 6 runs of ~30 minutes, 2,000-image rows: ~1 h 45 on 2 cores
#   ONLY="base warm" scripts/mm_recipe.sh      # a subset (the rest later; finished arms are kept)
#   COMBINED="--set warm_start=100 ..." scripts/mm_recipe.sh   # adds the arm that combines the winners
#
# A run already evaluated is kept (delete runs/mm-recipe/<name> and its eval row to redo one); an
# unfinished run resumes exactly.
set -euo pipefail
cd "$(dirname "$0")/.."
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
OUT=${OUT:-runs/mm-recipe}
RESULTS=${RESULTS:-results/mm_recipe}
BUDGET=${BUDGET:-19200}  # training images: 300 mm-alt updates at batch 32 (today's ablation budget)
EVAL_IMAGES=${EVAL_IMAGES:-2000}
JOBS=${JOBS:-2}
mkdir -p "$OUT/eval" "$RESULTS"
BASE="--teacher models/teacher --steps 8 --preset shapes32-cpu --method mm-alt --set threads=1 --set warmup=10
      --set sample_every=100000 --set batch_size=32 --set guidance_min=1 --set guidance_max=5
      --set guidance_default=3 --set ema_decay=0.99 --budget-images $BUDGET --no-progress"
OLD="--set weighting=batch --set data.p_two_objects=0.4"  # today's recipe, which every arm but one keeps

RUNS=(
  "base|$OLD"
  "warm-start|$OLD --set warm_start=100"
  "snr-cap-both|--set data.p_two_objects=0.4 --set weighting=snr-cap --set aux_weighting=snr-cap --set snr_cap=5"
  "aux-lr-3x|$OLD --set aux_lr=0.0003"
  "mix-0.7|--set weighting=batch --set data.p_two_objects=0.7"
  "base-seed1|$OLD --set seed=1 --set data.seed=2"
)
if [ -n "${COMBINED:-}" ]; then RUNS+=("combined|$COMBINED"); fi

one() {
  IFS='|' read -r name overrides <<< "$1"
  if [ -f "$OUT/eval/$name.json" ]; then echo "kept $name"; return; fi
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=1 $FEWSTEP distill $BASE $overrides --out "$OUT/$name" > "$OUT/$name.log" 2>&1
  OMP_NUM_THREADS=1 $FEWSTEP eval --model "$OUT/$name/student" --sampler ancestral --steps 8 --guidance 3 \
    --n-images "$EVAL_IMAGES" --threads 1 --name "$name" --out-dir "$OUT/eval" --no-progress >> "$OUT/$name.log" 2>&1
  echo "done $name $(date +%T)"
}
if [ -n "${ONLY:-}" ]; then
  kept=()
  for r in "${RUNS[@]}"; do case " $ONLY " in *" ${r%%|*} "*) kept+=("$r") ;; esac; done
  RUNS=("${kept[@]}")
fi
export -f one
export FEWSTEP OUT BASE EVAL_IMAGES
printf '%s\n' "${RUNS[@]}" | xargs -P "$JOBS" -d '\n' -I{} bash -c 'one "$@"' _ {}

[ -f "$OUT/eval/base.json" ] || exit 0
for row in "$OUT"/eval/*.json; do
  name=$(basename "$row" .json)
  [ "$name" = base ] && continue
  $FEWSTEP eval compare "$OUT/eval/base.json" "$row" --out-dir "$RESULTS" --name "base-vs-$name" --no-progress > /dev/null
done
cp "$OUT"/eval/*.json "$RESULTS"/   # the rows, in the evaluation schema (their .npz sidecars stay in runs/)
${PY:-.venv/bin/python} -m distill.reports.recipe "$OUT" "$RESULTS" results/mm_recipe.md
