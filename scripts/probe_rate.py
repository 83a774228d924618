"""Updates per minute of a probe run, from its metrics windows: the one home of the rule that sizes
the distillation table's runs (`scripts/equal_budget.sh` on the CPU, `scripts/device/distill_table.sh`
on a GPU).

The rate is the iterations' own: summed over the metrics windows (`log_every` updates each, with the
window's `it_s`), the first window, which carries the first calls' warm-up (and on CUDA the kernels'
autotuning), timed at the second window's rate. A probe's whole wall time (warm-up, checkpoint and
end-of-run samples) under-measured the rate by 13-25% at K = 4 on the CPU, which gave those runs
34-39 of their 45 minutes.

    python scripts/probe_rate.py runs/probe-mm-alt-k8/metrics.jsonl     # prints updates per minute
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def updates_per_minute(metrics: Path) -> float:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "it_s" in r and "step" in r]
    if not rows:
        raise ValueError(f"{metrics}: no metrics windows with 'step' and 'it_s'")
    windows, prev = [], 0
    for r in rows:
        windows.append((r["step"] - prev, r["it_s"]))
        prev = r["step"]
    if len(windows) > 1:
        windows[0] = (windows[0][0], windows[1][1])
    return round(60 * prev / sum(n / rate for n, rate in windows), 2)


if __name__ == "__main__":
    print(updates_per_minute(Path(sys.argv[1])))
