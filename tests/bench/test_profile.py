"""`fewstep bench profile` (bench.profile): per-op tables from ONNX Runtime's profiler, and their Markdown."""

from __future__ import annotations

import pytest

from bench.profile import markdown, profile_ort


def test_the_ort_table_shares_one_runs_kernel_time_out_by_op(tiny_bundle):
    prof = profile_ort(tiny_bundle, batch=2, runs=2)
    assert prof["engine"] == "onnxruntime" and prof["batch"] == 2 and prof["median_ms_unprofiled"] > 0
    ops = prof["ops"]
    assert ops and sum(o["share"] for o in ops) == pytest.approx(1.0)
    assert [o["ms_per_run"] for o in ops] == sorted((o["ms_per_run"] for o in ops), reverse=True)
    assert {"Conv", "Attention"} <= {o["op"] for o in ops}  # the network's convolutions and fused attention
    assert all(o["calls_per_run"] >= 1 for o in ops)


def test_the_markdown_lists_the_top_ops():
    prof = {
        "engine": "onnxruntime",
        "batch": 4,
        "median_ms_unprofiled": 12.3,
        "ops": [
            {"op": "Conv", "ms_per_run": 8.0, "share": 0.8, "calls_per_run": 20},
            {"op": "Attention", "ms_per_run": 2.0, "share": 0.2, "calls_per_run": 3},
        ],
    }
    text = markdown(prof, top=1)
    assert text.startswith("**onnxruntime**, batch 4 (one evaluation 12 ms, median)")
    assert "| Conv | 8.0 | 80% | 20 |" in text and "Attention" not in text
