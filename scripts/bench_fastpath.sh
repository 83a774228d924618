#!/usr/bin/env bash
# Issue 18's measurements, in one run on an otherwise idle machine (about 45 minutes on the 2-core
# development VM), into results/bench/i18/ (BENCHMARKS.md, "The fast path without torch"):
#
#   1. sampler throughput side by side (interleaved rounds): ONNX Runtime fp32 with the previous export
#      recipe's graph (today's image), the lean graph, OpenVINO fp32 and bf16, torch.compile bf16;
#      the 4-step default student and the teacher at K = 16, batches 16 and 64;
#   2. where an evaluation's time goes, previous graph against the lean one (ORT profiler);
#   3. quality of OpenVINO bf16 against ONNX Runtime fp32 on the evaluation's prompts and seeds, with
#      paired 95% intervals (`fewstep eval compare`): the default students at 2,000 images, the
#      teacher at 500;
#   4. the start-up choices over repeated fresh starts: the batch profile on the chosen path, and
#      `kind=auto`'s backend choice; then (`tuning`) the same with a 20 s budget, and through a
#      tuning cache that the starts share (the first measures, the rest reuse);
#   5. fewstep (kind=auto) against LitServe on the 4-step default student, alternated rounds (`fewstep bench peer`);
#   6. HTTP under load on the chosen path (pinned) against the raw sampler (`fewstep bench http`).
#
#   scripts/bench_fastpath.sh            # everything
#   ONLY="sampler quality" scripts/bench_fastpath.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
OUT=${OUT:-results/bench/i18}
QUALITY_IMAGES=${QUALITY_IMAGES:-2000}
TEACHER_QUALITY_IMAGES=${TEACHER_QUALITY_IMAGES:-500}
mkdir -p "$OUT" runs/bench
want() { [ -z "${ONLY:-}" ] || case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
stamp() { echo "== $(date -u +%FT%TZ) $*"; }
# The default students (bench/defaults.py, the distillation table's winners); the figures in
# BENCHMARKS.md were measured when they were pd-k4 and pd-k8.
PY=${PY:-.venv/bin/python}
read -r S4 S8 < <($PY -c "from bench.defaults import STUDENT_K4, STUDENT_K8; print(STUDENT_K4, STUDENT_K8)")
PATHS="onnxruntime-fp32-legacy onnxruntime-fp32 openvino-fp32 openvino-bf16 torch-compile-bf16"

if want sampler; then
  stamp sampler
  $FEWSTEP bench sampler --model bundles/$S4 --backends $PATHS --batches 16 64 --steps 4 \
    --out "$OUT/sampler-$S4.json"
  $FEWSTEP bench sampler --model bundles/teacher --backends $PATHS --batches 16 64 --steps 16 \
    --out "$OUT/sampler-teacher.json"
fi

if want profile; then
  stamp profile
  $FEWSTEP bench profile --model bundles/teacher --engines onnxruntime-legacy onnxruntime --batch 32 \
    > "$OUT/profile-teacher.md"
fi

if want quality; then
  stamp quality
  for spec in "$S4 4 $QUALITY_IMAGES" "$S8 8 $QUALITY_IMAGES" "teacher 16 $TEACHER_QUALITY_IMAGES"; do
    read -r m k n <<< "$spec"
    # QUALITY_MODELS="mm-alt-k8": only those (a new default student's row beside the committed ones)
    if [ -n "${QUALITY_MODELS:-}" ]; then case " $QUALITY_MODELS " in *" $m "*) ;; *) continue ;; esac; fi
    for path in onnxruntime-fp32 openvino-bf16; do
      $FEWSTEP bench quality --model "bundles/$m" --backend "${path%-*}" --precision "${path##*-}" --steps "$k" \
        --guidance 3 --n-images "$n" --out "$OUT/quality" --images runs/bench/quality-i18
    done
    $FEWSTEP eval compare "$OUT/quality/$m-onnxruntime-fp32-$k-w3.json" "$OUT/quality/$m-openvino-bf16-$k-w3.json" \
      --out-dir "$OUT/quality" --name "$m-fp32-vs-openvino-bf16" --no-progress
  done
fi

if want starts; then
  stamp starts
  $FEWSTEP bench batch-profile --model bundles/$S4 --backend openvino --precision bf16 --starts 10 \
    --out "$OUT/batch_profile-$S4-openvino-bf16.json"
  $FEWSTEP bench batch-profile --model bundles/$S4 --backend auto --starts 10 \
    --out "$OUT/batch_profile-$S4-auto.json"
fi

if want tuning; then
  # The tuning cache (FEWSTEP_TUNING_CACHE): the once-per-machine profile's own spread (its 20 s
  # budget, each start measuring: no cache), then 10 starts sharing one fresh cache file.
  stamp tuning
  $FEWSTEP bench batch-profile --model bundles/$S4 --backend auto --starts 10 --budget-s 20 \
    --out "$OUT/batch_profile-$S4-auto-20s.json"
  rm -f runs/bench/tuning.json
  $FEWSTEP bench batch-profile --model bundles/$S4 --backend auto --starts 10 --tuning-cache runs/bench/tuning.json \
    --out "$OUT/batch_profile-$S4-auto-cached.json"
fi

if want peer; then
  stamp peer
  FEWSTEP_BACKEND__KIND=auto $FEWSTEP bench peer --bundle bundles/$S4 --rounds 3 --py-spy-s 10 --out "$OUT"
fi

if want http; then
  stamp http
  # the chosen path pinned, so that the server and the raw sampler beside it run the same one
  $FEWSTEP bench http --backend openvino-bf16 --out "$OUT/http"
fi
stamp done
