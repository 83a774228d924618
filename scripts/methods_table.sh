#!/usr/bin/env bash
# The methods table at equal training image passes: every distillation method at K = 1, 2, 4, 8 where
# it applies (mm-alt, pd, cd at every K; add at K <= 4; emd at K = 1; shortcut as one run whose one
# student is evaluated at every K), each in its served form (conditioned on w in [1, 5], student EMA
# 0.99) and given the same BUDGET of training images (`--budget-images`). Runs go in time-boxed slices
# that resume exactly; the checkpoint a later session resumes from is copied to SAVED/<name>/ (commit
# it). A finished run is evaluated once on EVAL_IMAGES images at w = 3 by both judges (`fewstep eval
# --analytic`); the teacher's 64-step row is the ceiling. Then pso tunes the winner at each K (the
# project's rule, `distill.reports.methods --winners`) and its row joins the table, and the report is
# written (results/methods.md).
#
#   scripts/methods_table.sh                               # one slice of SLICE_MINUTES per unfinished run, JOBS side by side
#   ONLY="emd-k1 add-k1" SLICE_MINUTES=120 scripts/methods_table.sh
#   ONLY="mm-alt-k1 emd-k1" BUDGET=16 BATCH=4 EVAL_IMAGES=16 CEILING_STEPS=2 PSO_SET="--preset tiny" \
#     OUT=runs/methods-smoke SAVED=runs/methods-smoke/saved REPORT=runs/methods-smoke/methods.md \
#     scripts/methods_table.sh                             # a smoke run of every stage: minutes
set -euo pipefail
cd "$(dirname "$0")/.."
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/methods}
SAVED=${SAVED:-models/methods-runs}
BUDGET=${BUDGET:-48000}  # training images a run (the recipe ablation's rows had 19,200; the long runs 200,000)
BATCH=${BATCH:-32}
SLICE_MINUTES=${SLICE_MINUTES:-60}
EVAL_IMAGES=${EVAL_IMAGES:-2000}
GUIDANCE=${GUIDANCE:-3}
JOBS=${JOBS:-2}
PSO_SET=${PSO_SET:-"--preset shapes32-cpu"}
CEILING_STEPS=${CEILING_STEPS:-64}
REPORT=${REPORT:-results/methods.md}
# mm-alt in the recipe the ablation chose (results/mm_recipe.md), as the long runs train it.
RECIPE=${RECIPE-$(cat results/mm_recipe/chosen.txt)}
mkdir -p "$OUT/eval" "$SAVED"
COMMON="--teacher models/teacher --preset shapes32-cpu --set threads=1 --set batch_size=$BATCH --set warmup=50
        --set sample_every=100000 --set guidance_min=1 --set guidance_max=5 --set guidance_default=$GUIDANCE
        --set ema_decay=0.99 --budget-images $BUDGET --no-progress"
if [ "$BUDGET" -lt 1000 ]; then COMMON="$COMMON --set warmup=1 --set log_every=1 --set ckpt_every=1"; fi

# name | method | K (of the run) | overrides | the K it is evaluated at (default: its own)
RUNS=(
  "mm-alt-k1|mm-alt|1|$RECIPE|" "mm-alt-k2|mm-alt|2|$RECIPE|" "mm-alt-k4|mm-alt|4|$RECIPE|" "mm-alt-k8|mm-alt|8|$RECIPE|"
  "pd-k1|pd|1|--set teacher_steps=64|" "pd-k2|pd|2|--set teacher_steps=64|"
  "pd-k4|pd|4|--set teacher_steps=64|" "pd-k8|pd|8|--set teacher_steps=64|"
  "cd-k1|cd|1|--set teacher_steps=64|" "cd-k2|cd|2|--set teacher_steps=64|"
  "cd-k4|cd|4|--set teacher_steps=64|" "cd-k8|cd|8|--set teacher_steps=64|"
  "add-k1|add|1||" "add-k2|add|2||" "add-k4|add|4||"
  "emd-k1|emd|1||"
  "shortcut|shortcut|8||1 2 4 8"
)

evaluate() {  # model row-name K
  OMP_NUM_THREADS=1 $FEWSTEP eval --model "$1" --steps "$3" --guidance "$GUIDANCE" --n-images "$EVAL_IMAGES" \
    --threads 1 --analytic --name "$2" --out-dir "$OUT/eval" --no-progress >> "$OUT/eval.log" 2>&1
}

one() {
  IFS='|' read -r name method k overrides eval_ks <<< "$1"
  eval_ks=${eval_ks:-$k}
  run="$OUT/$name"
  if [ ! -f "$run/checkpoint/state.json" ] && [ -f "$SAVED/$name/checkpoint/state.json" ]; then
    mkdir -p "$run" && cp -r "$SAVED/$name/." "$run/"   # a fresh clone resumes from the committed checkpoint
  fi
  if [ ! -f "$run/student/config.json" ]; then
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 $FEWSTEP distill $COMMON --method "$method" --steps "$k" $overrides \
      --max-minutes "$SLICE_MINUTES" --out "$run" >> "$OUT/$name.log" 2>&1
    rm -rf "$SAVED/$name" && mkdir -p "$SAVED/$name"
    cp -r "$run/checkpoint" "$run/config.json" "$run/metrics.jsonl" "$run/summary.json" "$SAVED/$name/" 2>/dev/null || true
  fi
  [ -f "$run/student/config.json" ] || { echo "$(date +%T) $name: slice done, not finished"; return 0; }
  for ek in $eval_ks; do
    row="$method-k$ek"
    [ -f "$OUT/eval/$row.json" ] && continue
    evaluate "$run/student" "$row" "$ek"
    cp "$run/summary.json" "$OUT/eval/$row.summary.json"
    echo "$(date +%T) $row evaluated"
  done
}
if [ -n "${ONLY:-}" ]; then
  kept=()
  for r in "${RUNS[@]}"; do case " $ONLY " in *" ${r%%|*} "*) kept+=("$r") ;; esac; done
  RUNS=("${kept[@]}")
fi
export -f one evaluate
export FEWSTEP PY OUT SAVED COMMON SLICE_MINUTES EVAL_IMAGES GUIDANCE
printf '%s\n' "${RUNS[@]}" | xargs -P "$JOBS" -d '\n' -I{} bash -c 'one "$@"' _ {}

# The ceiling: the teacher's 64 ancestral steps, by both judges.
[ -f "$OUT/eval/ceiling.json" ] || evaluate models/teacher ceiling "$CEILING_STEPS"

# pso on top of each K's winner (the rows evaluated so far): tuned, then evaluated as pso-k<K>.
$PY -m distill.reports.methods "$OUT" "$REPORT" --winners | while read -r k winner; do
  [ -f "$OUT/eval/pso-k$k.json" ] && continue
  base=$($PY -c "import json,sys; print(json.load(open(sys.argv[1]))['model'])" "$OUT/eval/$winner.json")
  # shellcheck disable=SC2086
  [ -f "$OUT/pso-k$k/student/config.json" ] || OMP_NUM_THREADS=1 $FEWSTEP tune --method pso --model "$base" \
    --out "$OUT/pso-k$k" $PSO_SET --set threads=1 --no-progress >> "$OUT/pso-k$k.log" 2>&1
  evaluate "$OUT/pso-k$k/student" "pso-k$k" "$k"
  $PY -c "import json,sys; s=json.load(open(sys.argv[1])); t=json.load(open(sys.argv[2])); \
    json.dump({**s, 'tuning': t}, open(sys.argv[3], 'w'), indent=2)" \
    "$OUT/eval/$winner.summary.json" "$OUT/pso-k$k/summary.json" "$OUT/eval/pso-k$k.summary.json"
  echo "$(date +%T) pso-k$k (on $winner) evaluated"
done
$PY -m distill.reports.methods "$OUT" "$REPORT" --grid
mkdir -p "${REPORT%.md}"
cp "$OUT"/eval/*.json "${REPORT%.md}/" 2>/dev/null || true
