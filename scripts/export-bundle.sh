#!/usr/bin/env bash
# One served bundle from the committed weights, made the same way by `make bundles` and by the image's
# bundles stage (Dockerfile, BUNDLES_SOURCE=export): the model's committed results row goes in its
# manifest (--evaluation) and so does its committed bf16 measurement where there is one (--precision;
# export keeps it only where it measured this very denoiser graph, so kind=auto may serve bf16).
# One home for these arguments: the image once exported the teacher with a results row that had moved
# away, which only its export path (not CI's context path) would have hit.
#
#   scripts/export-bundle.sh NAME OUT [more fewstep export options]   # NAME: teacher or a student
#   FEWSTEP_EXPORT="/opt/export/bin/fewstep export" scripts/export-bundle.sh pd-k4 /bundles/pd-k4
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 NAME OUT [fewstep export options]" >&2; exit 2; }
name=$1 out=$2
shift 2
if [ "$name" = teacher ]; then
  model=models/teacher row=results/teacher/ancestral-16.json
else
  model=models/students/$name row=results/students/$name.json
fi
[ -f "$model/config.json" ] || { echo "$0: no model '$name' ($model/config.json)" >&2; exit 1; }
[ -f "$row" ] || { echo "$0: no results row for '$name' ($row): evaluate it first (make results-all)" >&2; exit 1; }
args=(--model "$model" --out "$out" --evaluation "$row")
if [ -f "results/precision/$name.json" ]; then args+=(--precision "results/precision/$name.json"); fi
# shellcheck disable=SC2086  # FEWSTEP_EXPORT is a command with its arguments
exec ${FEWSTEP_EXPORT:-fewstep export} "${args[@]}" "$@"
