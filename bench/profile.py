"""`fewstep bench profile`: where one network evaluation's time goes, per operator type.

ONNX Runtime: the session's own profiler (`SessionOptions.enable_profiling`), kernel times summed
by op type. torch: `torch.profiler`, self CPU time by aten op. Both over `runs` evaluations of the
bundle's denoiser at one batch size (after a warm-up), so the two tables can be read side by side.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from fewstep.bundle import load_manifest


def profile_ort(bundle: Path, batch: int, runs: int = 3, graph: Path | None = None) -> dict[str, Any]:
    import onnxruntime as ort

    from service.loader import denoiser_inputs

    m = load_manifest(bundle)
    spec = m.graphs["denoiser"]
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = os.cpu_count() or 1
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        sess = ort.InferenceSession(str(graph or bundle / spec.file), so, providers=["CPUExecutionProvider"])
        feeds = dict(zip([i.name for i in spec.inputs], denoiser_inputs(m, batch), strict=True))
        sess.run(None, feeds)
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    run_us = [e["dur"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by_op[e["args"]["op_name"]] += e["dur"]
            count[e["args"]["op_name"]] += 1
    runs_seen = len(run_us)
    return _table("onnxruntime", batch, by_op, count, runs_seen, sorted(run_us)[len(run_us) // 2] / 1e3)


def profile_torch(bundle: Path, batch: int, precision: str = "fp32", runs: int = 3) -> dict[str, Any]:
    import time

    from torch.profiler import ProfilerActivity, profile

    from service.backends.base import BackendSettings
    from service.loader import denoiser_inputs, make_denoiser

    m = load_manifest(bundle)
    den = make_denoiser(bundle, m, BackendSettings(kind="torch", precision=precision))
    x = denoiser_inputs(m, batch)
    den(*x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        den(*x)
        times.append(time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            den(*x)
    by_op: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    for ev in prof.key_averages():
        if ev.key.startswith("aten::") and ev.self_cpu_time_total > 0:
            by_op[ev.key.removeprefix("aten::")] += ev.self_cpu_time_total
            count[ev.key.removeprefix("aten::")] += ev.count
    return _table(f"torch {precision}", batch, by_op, count, runs, sorted(times)[len(times) // 2] * 1e3)


def _table(name: str, batch: int, by_op, count, runs: int, median_ms: float) -> dict[str, Any]:
    total = sum(by_op.values()) or 1
    ops = [
        {"op": k, "ms_per_run": v / runs / 1e3, "share": v / total, "calls_per_run": count[k] / runs}
        for k, v in by_op.most_common()
    ]
    return {"engine": name, "batch": batch, "median_ms_unprofiled": median_ms, "ops": ops}


def markdown(prof: dict[str, Any], top: int = 12) -> str:
    lines = [
        f"**{prof['engine']}**, batch {prof['batch']} (one evaluation {prof['median_ms_unprofiled']:.0f} ms, median)",
        "",
        "| op | ms/run | share | calls |",
        "|---|---:|---:|---:|",
    ]
    for o in prof["ops"][:top]:
        lines.append(f"| {o['op']} | {o['ms_per_run']:.1f} | {100 * o['share']:.0f}% | {o['calls_per_run']:.0f} |")
    return "\n".join(lines) + "\n"
