#!/usr/bin/env bash
# Hashes of what the offline side writes where it is deterministic, to show that a restructuring of
# distill/ changed no behaviour: run it before and after and compare the two files (they must be equal).
#
#   scripts/output_hashes.sh results/restructure/before.txt
#
# Covered: a tiny teacher trained from scratch and packed with its Adam second moments; tiny
# distillations of every method from the default teacher (mm-alt with the new options too); a
# 64-image evaluation row's figures; the export of a committed student (its ONNX graphs and
# manifest). One CPU thread each, so the arithmetic is the same run to run. About 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_FILE=${1:?usage: scripts/output_hashes.sh FILE}
FEWSTEP=${FEWSTEP:-.venv/bin/fewstep}
PY=${PY:-.venv/bin/python}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export OMP_NUM_THREADS=1
q="--no-progress"
$FEWSTEP train --preset tiny --set threads=1 --set steps=6 --set log_every=2 --set ckpt_every=3 --set sample_every=1000 \
  --out "$W/teacher" $q > "$W/log" 2>&1
$FEWSTEP pack --run "$W/teacher" --out "$W/teacher-packed" $q >> "$W/log" 2>&1
$FEWSTEP pack --run "$W/teacher-packed" --out "$W/teacher-packed" --estimate-adam-v 2 --threads 1 $q >> "$W/log" 2>&1
d="--teacher models/teacher --preset tiny --set threads=1 --set data.resolution=32 $q"
$FEWSTEP distill $d --method mm-alt --steps 2 --out "$W/mm-alt" >> "$W/log" 2>&1
$FEWSTEP distill $d --method mm-alt --steps 2 --set iters=6 --set warm_start=2 --set weighting=snr-cap \
  --set aux_weighting=snr-cap --set snr_cap=5 --out "$W/mm-alt-new" >> "$W/log" 2>&1
$FEWSTEP distill $d --method mm-param --steps 2 --out "$W/mm-param" >> "$W/log" 2>&1
$FEWSTEP distill $d --method pd --steps 2 --set teacher_steps=8 --set iters=6 --out "$W/pd" >> "$W/log" 2>&1
$FEWSTEP distill $d --method cd --steps 2 --set teacher_steps=8 --out "$W/cd" >> "$W/log" 2>&1
$FEWSTEP eval --model "$W/mm-alt/student" --steps 2 --n-images 64 --threads 1 --resamples 50 --name row \
  --out-dir "$W/eval" $q >> "$W/log" 2>&1
$FEWSTEP export --model models/students/mm-alt-k8 --out "$W/bundle" --cache-dir "$W/cache" >> "$W/log" 2>&1
{
  for f in "$W"/teacher/checkpoint/*.safetensors "$W"/teacher-packed/*.safetensors \
           "$W"/{mm-alt,mm-alt-new,mm-param,pd,cd}/student/model.safetensors \
           "$W"/{mm-alt,mm-alt-new,mm-param,pd,cd}/checkpoint/*.safetensors; do
    [ -f "$f" ] && echo "$(sha256sum < "$f" | cut -c1-16) ${f#"$W"/}"
  done
  # ONNX graphs: hashed without the per-node metadata torch's exporter writes (each node's Python
  # module path, e.g. "distill.export.bundle.TextGraph"), which moves when a module moves while the
  # graph, its weights and its outputs stay the same.
  $PY - "$W"/bundle/*.onnx <<'PYEOF'
import hashlib, sys
import onnx
for path in sys.argv[1:]:
    m = onnx.load(path)
    for node in m.graph.node:
        del node.metadata_props[:]
    print(hashlib.sha256(m.SerializeToString(deterministic=True)).hexdigest()[:16], path.split("/")[-2] + "/" +
          path.split("/")[-1] + " (graph)")
PYEOF
  # The evaluation row's figures (not its timings, machine or code version).
  $PY - "$W/eval/row.json" <<'PYEOF'
import hashlib, json, sys
row = json.load(open(sys.argv[1]))
keep = {k: row[k] for k in ("fd", "fd_infinity", "kid", "precision", "recall", "adherence", "fd_ci", "kid_ci",
                            "adherence_ci", "grain", "grain_ci", "free_attribute_tv") if k in row}
print(hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16], "eval/row.json figures")
PYEOF
} > "$OUT_FILE"
cat "$OUT_FILE"
