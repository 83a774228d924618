"""`fewstep bench batch-profile`: how much the warm-up batch profile's choice moves between starts.

Each start is a fresh Python process that loads one bundle as the service does
(`service.loader.load_pipeline`), runs the engine's cost profile (`service.engine.profile.
measure_costs` over `Pipeline.generate`, the engine's own timing loop) and derives the batcher
limits, reporting the chosen `max_batch_images`, `max_wait_s`, the per-size times, how long the
profile took and the process's peak RSS. The parent runs `--starts` of them one after another and
prints the spread: a stable profile gives one `max_batch_images` for every start.

Run it on a quiet machine; on a shared one the spread measures the other work as much as the
profile.

    fewstep bench batch-profile --model bundles/pd-k4 --starts 10 --out results/bench/batch_profile.json
"""

from __future__ import annotations

import asyncio
import collections
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.defaults import STUDENT_K4
from fewstep.provenance import provenance

DEFAULT_MODEL = f"bundles/{STUDENT_K4}"


def one_start(
    model: str, backend: str, precision: str, budget_s: float, max_batch: int, tuning_cache: str | None = None
) -> dict[str, Any]:
    """Load, profile and derive limits once, in this process (the child's body); with `tuning_cache`,
    through it, as a service with `FEWSTEP_TUNING_CACHE` does."""
    from service.backends.base import BackendSettings
    from service.engine.engine import EngineConfig
    from service.engine.profile import derive_limits, tuned_costs
    from service.loader import load_pipeline
    from service.pipeline import ImageJob
    from service.settings import ServiceSettings
    from service.tuning import TuningCache

    tuning = TuningCache(tuning_cache) if tuning_cache else None
    t0 = time.perf_counter()
    p = load_pipeline(model, BackendSettings(kind=backend, precision=precision), tuning=tuning)
    loaded = time.perf_counter() - t0
    steps = min(p.manifest.steps)

    async def run(b: int) -> float:
        jobs = [ImageJob(f"profile {i}", i, steps, p.manifest.guidance.default) for i in range(b)]
        t = time.perf_counter()
        p.generate(jobs)
        return time.perf_counter() - t

    t1 = time.perf_counter()
    settle = EngineConfig().profile_settle_calls  # as the engine profiles
    tuned_budget_s = ServiceSettings.model_fields["tuning_profile_budget_s"].default
    profile, reused = asyncio.run(
        tuned_costs(run, p.name, steps, tuning, p.identity, max_batch, budget_s, tuned_budget_s, settle)
    )
    limits = derive_limits(profile)
    hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")]
    return {
        "backend": p.backend,
        "max_batch_images": limits.max_batch_images,
        "max_wait_s": limits.max_wait_s,
        "seconds": {str(b): s for b, s in profile.seconds.items()},
        "reused": reused,
        "profile_s": time.perf_counter() - t1,
        "load_s": loaded,
        "max_rss_mb": int(hwm[0]) / 1024 if hwm else None,
    }


def spread(starts: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of repeated starts: how often each batch bound was chosen, and the ranges."""
    chosen = collections.Counter(s["max_batch_images"] for s in starts)
    rss = [s["max_rss_mb"] for s in starts if s.get("max_rss_mb") is not None]
    sizes = sorted({int(b) for s in starts for b in s["seconds"]})
    per_size = {
        b: [b / s["seconds"][str(b)] for s in starts if str(b) in s["seconds"]] for b in sizes
    }  # images/s of each start's fastest run
    return {
        "starts": len(starts),
        "max_batch_images": dict(sorted(chosen.items())),
        "stable": len(chosen) == 1,
        "max_wait_s": sorted({s["max_wait_s"] for s in starts}),
        "profile_s_median": statistics.median(s["profile_s"] for s in starts),
        "max_rss_mb_range": [min(rss), max(rss)] if rss else None,
        "images_per_s": {
            str(b): {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
            for b, v in per_size.items()
        },
    }


def _budget(doc: dict[str, Any]) -> str:
    if not doc.get("tuning_cache"):
        return f"budget {doc['budget_s']} s, no tuning cache"
    reused = sum(bool(r.get("reused")) for r in doc["runs"])
    return f"tuning cache: {len(doc['runs']) - reused} start(s) measured, {reused} reused"


def markdown(doc: dict[str, Any]) -> str:
    s = doc["spread"]
    lines = [
        f"**{doc['model']}** ({doc['backend']}, {_budget(doc)}): {s['starts']} starts, "
        f"max_batch_images chosen {s['max_batch_images']} ({'stable' if s['stable'] else 'NOT stable'}), "
        f"profile {s['profile_s_median']:.1f} s (median), peak RSS {s['max_rss_mb_range']} MiB",
        "",
        "| batch | images/s median | min | max | starts that profiled it |",
        "|---:|---:|---:|---:|---:|",
    ]
    for b, v in s["images_per_s"].items():
        lines.append(f"| {b} | {v['median']:.1f} | {v['min']:.1f} | {v['max']:.1f} | {v['n']} |")
    return "\n".join(lines) + "\n"


def run_starts(
    model: str,
    starts: int,
    backend: str = "onnxruntime",
    precision: str = "auto",
    budget_s: float = 5.0,
    max_batch: int = 64,
    tuning_cache: str | None = None,
) -> dict[str, Any]:
    """`starts` fresh processes one after another, each `fewstep bench batch-profile --one` (the
    body of `one_start`, its JSON the last line of its output); the runs and their spread."""
    results = []
    for i in range(starts):
        cmd = [sys.executable, "-m", "fewstep_cli", "bench", "batch-profile", "--one", "--model", model]
        cmd += ["--backend", backend]
        cmd += ["--precision", precision, "--budget-s", str(budget_s), "--max-batch", str(max_batch)]
        cmd += ["--tuning-cache", tuning_cache] if tuning_cache else []
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"start {i + 1}/{starts}: max_batch_images {results[-1]['max_batch_images']}", file=sys.stderr)
    return {
        "model": model, "backend": backend, "precision": precision, "budget_s": budget_s,
        "tuning_cache": tuning_cache, "runs": results, "spread": spread(results), **provenance(),
    }  # fmt: skip


def write_results(doc: dict[str, Any], out: str | Path) -> Path:
    """The starts' document as JSON at `out`, its markdown beside it; the markdown's path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    md = out.with_suffix(".md")
    md.write_text(markdown(doc))
    return md
