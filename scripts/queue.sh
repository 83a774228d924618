#!/usr/bin/env bash
# The one queue of background CPU runs for distillation. The machines have two cores, so the long runs
# at equal compute (scripts/long_runs.sh: they decide the default model) and the methods table
# (scripts/methods_table.sh) do not run side by side: a call spends SLICE_MINUTES on the long runs
# until every one has reached its budget, then on the methods table. Both resume exactly from the
# checkpoints they copy to models/long-runs/ and models/methods-runs/; commit those after a call.
#
#   scripts/queue.sh                      # one slice (SLICE_MINUTES, default 60), JOBS runs side by side
#   SLICE_MINUTES=150 scripts/queue.sh    # a whole session's worth
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LONG_BUDGET=${LONG_BUDGET:-200000}  # training images a long run (scripts/long_runs.sh BUDGET)
export SLICE_MINUTES=${SLICE_MINUTES:-60}
LONG_RUNS=${LONG_RUNS:-"mm-alt-k8 pd-k8 mm-alt-k4 cd-k4"}

long_runs_left() {  # the long runs without a row at their budget (committed or in runs/long/eval)
  for name in $LONG_RUNS; do
    [ -f "results/long_runs/$name-i$LONG_BUDGET.json" ] || [ -f "runs/long/eval/$name-i$LONG_BUDGET.json" ] || echo "$name"
  done
}

left=$(long_runs_left | tr '\n' ' ')
if [ -n "${left// /}" ]; then
  # The first two unfinished long runs (in the order above) take the two cores.
  first_two=$(echo "$left" | awk '{print $1, $2}' | sed "s/ *$//")
  echo "$(date +%T) queue: long runs $first_two ($SLICE_MINUTES min)"
  ONLY="$first_two" BUDGET="$LONG_BUDGET" "${LONG_RUNS_SCRIPT:-scripts/long_runs.sh}"
  [ -n "${LONG_RUNS_SCRIPT:-}" ] || "$PY" -m distill.reports.long_runs runs/long results/long_runs.md || true
else
  echo "$(date +%T) queue: long runs done; methods table ($SLICE_MINUTES min)"
  (unset BUDGET ONLY; "${METHODS_SCRIPT:-scripts/methods_table.sh}")  # the table at its own BUDGET
fi
