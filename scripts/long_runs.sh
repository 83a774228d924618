#!/usr/bin/env bash
# Long CPU runs at equal compute: the chosen moment-matching recipe (results/mm_recipe.md) at K = 8 and
# K = 4 and the best baseline of the CPU table at each K (pd at K = 8, cd at K = 4), every one in its
# served form (conditioned on w in [1, 5], student EMA 0.99) and given the same BUDGET of training
# images (`--budget-images`: the learning-rate schedule spans the whole budget). Each run goes in
# time-boxed slices that resume exactly; at each MILESTONE of training images it stops, packs its EMA
# student and evaluates it (EVAL_IMAGES images, w = 3), so every run has a curve of FD, adherence and
# grain against image passes at the same points (pd only at its last milestone: before its final
# halving stage its student samples with more than K steps). The checkpoint a later session resumes
# from is copied to models/long-runs/<name>/ (commit it); on a fresh clone the run starts from there.
#
#   scripts/long_runs.sh                                  # one slice of SLICE_MINUTES for each run, JOBS side by side
#   ONLY="mm-alt-k8 pd-k8" SLICE_MINUTES=120 scripts/long_runs.sh
#   RECIPE="--set warm_start=100" scripts/long_runs.sh    # another mm-alt recipe (default: chosen from results/mm_recipe)
#
# Then `python -m distill.reports.long_runs runs/long results/long_runs.md` writes the curves' table and plot.
set -euo pipefail
cd "$(dirname "$0")/.."
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/long}
SAVED=${SAVED:-models/long-runs}
BUDGET=${BUDGET:-200000}  # training images a run: at least 4x the CPU table's rows (about 45,000 each)
MILESTONES=${MILESTONES:-"40000 80000 120000 160000 200000"}
SLICE_MINUTES=${SLICE_MINUTES:-60}
EVAL_IMAGES=${EVAL_IMAGES:-2000}
JOBS=${JOBS:-2}
if [ -z "${RECIPE:-}" ]; then
  # The recipe the ablation chose, as committed (regenerate it with
  # `python -m distill.reports.recipe --chosen runs/mm-recipe results/mm_recipe > results/mm_recipe/chosen.txt`).
  RECIPE=$(cat results/mm_recipe/chosen.txt)
fi
mkdir -p "$OUT/eval" "$SAVED"
# Milestones evaluated in an earlier session (maybe on another machine) are not evaluated again on a
# later checkpoint: their rows come back from the committed results.
cp -n results/long_runs/*.json results/long_runs/*.npz "$OUT/eval/" 2>/dev/null || true
COMMON="--teacher models/teacher --preset shapes32-cpu --set threads=1 --set batch_size=32 --set warmup=50
        --set sample_every=100000 --set guidance_min=1 --set guidance_max=5 --set guidance_default=3
        --set ema_decay=0.99 --budget-images $BUDGET --no-progress"

# name | method | K | overrides | milestones (default: all)
RUNS=(
  "mm-alt-k8|mm-alt|8|$RECIPE|"
  "pd-k8|pd|8|--set teacher_steps=64|$BUDGET"
  "mm-alt-k4|mm-alt|4|$RECIPE|"
  "cd-k4|cd|4|--set teacher_steps=64|"
)

one() {
  IFS='|' read -r name method k overrides marks <<< "$1"
  marks=${marks:-$MILESTONES}
  run="$OUT/$name"
  if [ ! -f "$run/checkpoint/state.json" ] && [ -f "$SAVED/$name/checkpoint/state.json" ]; then
    mkdir -p "$run" && cp -r "$SAVED/$name/." "$run/"   # a fresh clone resumes from the committed checkpoint
  fi
  end=$(( $(date +%s) + 60 * SLICE_MINUTES ))
  for m in $marks; do
    [ -f "$OUT/eval/$name-i$m.json" ] && continue
    left=$(( end - $(date +%s) ))
    [ "$left" -gt 120 ] || break
    # shellcheck disable=SC2086
    OMP_NUM_THREADS=1 $FEWSTEP distill $COMMON --method "$method" --steps "$k" $overrides --stop-at-images "$m" \
      --max-minutes "$(( left / 60 ))" --pack-unfinished --out "$run" >> "$OUT/$name.log" 2>&1
    reached=$($PY -c "import json,sys; print(int(json.load(open(sys.argv[1]))['image_passes'] >= int(sys.argv[2])))" \
      "$run/summary.json" "$m")
    [ "$reached" = 1 ] || break
    OMP_NUM_THREADS=1 $FEWSTEP eval --model "$run/student" --guidance 3 --n-images "$EVAL_IMAGES" --threads 1 \
      --name "$name-i$m" --out-dir "$OUT/eval" --no-progress --fresh >> "$OUT/$name.log" 2>&1
    cp "$run/summary.json" "$OUT/eval/$name-i$m.summary.json"
    echo "$(date +%T) $name reached $m images"
  done
  # What a later session (maybe on another machine) resumes from: the checkpoint and the run's record.
  rm -rf "$SAVED/$name" && mkdir -p "$SAVED/$name"
  cp -r "$run/checkpoint" "$run/config.json" "$run/metrics.jsonl" "$run/summary.json" "$SAVED/$name/" 2>/dev/null || true
  echo "$(date +%T) $name slice done: $($PY -c "import json,sys; s=json.load(open(sys.argv[1])); print(s['image_passes'], 'images,', s['iters'], 'updates')" "$run/summary.json")"
}
if [ -n "${ONLY:-}" ]; then
  kept=()
  for r in "${RUNS[@]}"; do case " $ONLY " in *" ${r%%|*} "*) kept+=("$r") ;; esac; done
  RUNS=("${kept[@]}")
fi
export -f one
export FEWSTEP PY OUT SAVED COMMON MILESTONES SLICE_MINUTES EVAL_IMAGES
printf '%s\n' "${RUNS[@]}" | xargs -P "$JOBS" -d '\n' -I{} bash -c 'one "$@"' _ {}
mkdir -p results/long_runs
cp "$OUT"/eval/*.json "$OUT"/eval/*.npz results/long_runs/ 2>/dev/null || true  # rows and per-image scores (the pairing)
