#!/bin/bash
# One long distillation run alone on a lent GPU for the whole call (issue: students that beat their
# teacher), resumable, so that several lent calls add up to one run. Not yet run on a GPU.
#
#   NAME=mm-alt-k8 METHOD=mm-alt K=8 MINUTES=9 BUDGET=2000000 RECIPE="--set warm_start=100" bash .gpu/long_run.sh
#
# The run resumes from models/long-runs-gpu/$NAME/ (the checkpoint the last call brought back and a
# session committed; carried with the tree) and trains until MINUTES or BUDGET training images
# (`--budget-images`: the learning-rate schedule spans the whole budget, so every call continues the
# same schedule). It runs in the served form (w in [1, 5], EMA 0.99) at batch 256 in bf16. $OUT gets
# the checkpoint's files (5 weights and optimiser files for mm-alt, each under 16 MiB, and state.json,
# which holds the config) and the run's summary and metrics: 8 files, the most the device returns.
# Copy them back with
#   mkdir -p models/long-runs-gpu/$NAME/checkpoint && cp <files_at>/$NAME/*.safetensors <files_at>/$NAME/state.json \
#     models/long-runs-gpu/$NAME/checkpoint/ && cp <files_at>/$NAME/summary.json <files_at>/$NAME/metrics.jsonl \
#     models/long-runs-gpu/$NAME/
# and score the packed student on the CPU like the CPU runs (`fewstep eval --model runs/.../student`).
# Set-up on the device (pydantic's wheels, the MiniLM copy): scripts/device/README.md.
set -euo pipefail
NAME=${NAME:?} METHOD=${METHOD:?} K=${K:?}
MINUTES=${MINUTES:-9}
BUDGET=${BUDGET:-2000000}
RECIPE=${RECIPE:-}
EXTRA=${EXTRA:-}  # e.g. --set teacher_steps=64 for pd and cd
RUN=/tmp/long/$NAME
SAVED=models/long-runs-gpu/$NAME
mkdir -p "$RUN"
if [ -f "$SAVED/checkpoint/state.json" ]; then cp -r "$SAVED/." "$RUN/"; fi
# shellcheck disable=SC2086
python3 -m fewstep_cli distill --teacher models/teacher --preset shapes32-gpu --method "$METHOD" --steps "$K" \
  --set batch_size=256 --set bf16=true --set sample_every=1000000 --set ckpt_every=200 --set guidance_min=1 \
  --set guidance_max=5 --set guidance_default=3 --set ema_decay=0.99 $RECIPE $EXTRA \
  --budget-images "$BUDGET" --max-minutes "$MINUTES" --pack-unfinished --no-progress --out "$RUN" \
  2>&1 | tee "$RUN.log"
mkdir -p "$OUT/$NAME"
cp "$RUN"/checkpoint/*.safetensors "$RUN"/checkpoint/state.json "$OUT/$NAME/"
cp "$RUN"/summary.json "$RUN"/metrics.jsonl "$OUT/$NAME/" 2>/dev/null || true  # 8 files at most come back
python3 -c "import json; s=json.load(open('$RUN/summary.json')); print(s['image_passes'], 'images,', s['iters'], 'updates,', round(s['wall_s']), 's')"
