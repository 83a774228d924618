"""Resident memory of a serving process by the bundles it loads, with and without sharing identical
text encoders (`service.loader.load_prompt_encoder`).

Each variant loads the bundles (warm-up included, as the service does) in a fresh Python process
and reports its peak resident set size (VmHWM), so that one variant's allocations never count
against the other. Prints a table and writes the figures to `--out`.

    fewstep bench memory --bundles bundles --models teacher pd-k8 pd-k4 --out results/bench/memory.json
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.defaults import STUDENT_K4, STUDENT_K8
from bench.server import machine

DEFAULT_MODELS = ("teacher", STUDENT_K8, STUDENT_K4)

CHILD = """
import json, resource, sys
from service.loader import load_pipeline
bundles, models, share = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "shared"
shared = {} if share else None
pipelines = [load_pipeline(f"{bundles}/{m}", shared_text=shared) for m in models]  # all alive, as served
# VmHWM is this process's own peak; ru_maxrss would carry the parent's peak across fork and exec.
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
kib = int(hwm[0]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"max_rss_mb": kib / 1024}))
"""


def peak_rss_mb(bundles: Path, models: list[str], variant: str) -> float:
    """Peak RSS (MiB) of a fresh process that loads `models` from `bundles` ("shared" or "separate")."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(bundles), ",".join(models), variant],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(json.loads(out.strip().splitlines()[-1])["max_rss_mb"])


def memory_rows(
    bundles: Path, models: list[str], repeats: int = 3, report: Callable[[str], None] = print
) -> dict[str, Any]:
    """The first model alone, then all of `models` with separate and with shared text encoders:
    `repeats` fresh processes each, the median kept; {"machine", "rows"}."""
    rows = []
    for chosen in ([models[0]], models):
        for variant in ("separate", "shared") if len(chosen) > 1 else ("separate",):
            runs = sorted(peak_rss_mb(bundles, chosen, variant) for _ in range(repeats))
            rows.append(
                {"models": chosen, "text_encoders": variant, "max_rss_mb": runs, "median_mb": runs[len(runs) // 2]}
            )
            report(f"{','.join(chosen):28s} {variant:9s} peak RSS median {rows[-1]['median_mb']:.0f} MiB  {runs}")
    return {"machine": machine(), "rows": rows}
