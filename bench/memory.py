"""Resident memory of a serving process by the bundles it loads, with and without sharing identical
text encoders (`service.loader.load_prompt_encoder`).

Each variant loads the bundles (warm-up included, as the service does) in a fresh Python process
and reports its peak resident set size (VmHWM), so that one variant's allocations never count
against the other. Prints a table and writes the figures to `--out`.

    python -m bench.memory --bundles bundles --models teacher pd-k8 pd-k4 --out results/bench/memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench.defaults import STUDENT_K4, STUDENT_K8
from bench.server import machine

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundles", type=Path, default=Path("bundles"))
    p.add_argument("--models", nargs="+", default=["teacher", STUDENT_K8, STUDENT_K4])
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per variant (the median is kept)")
    p.add_argument("--out", type=Path, default=Path("results/bench/memory.json"))
    args = p.parse_args(argv)
    rows = []
    for models in ([args.models[0]], args.models):
        for variant in ("separate", "shared") if len(models) > 1 else ("separate",):
            runs = sorted(peak_rss_mb(args.bundles, models, variant) for _ in range(args.repeats))
            rows.append(
                {"models": models, "text_encoders": variant, "max_rss_mb": runs, "median_mb": runs[len(runs) // 2]}
            )
            print(f"{','.join(models):28s} {variant:9s} peak RSS median {rows[-1]['median_mb']:.0f} MiB  {runs}")
    result = {"machine": machine(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
