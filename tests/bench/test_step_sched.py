"""`fewstep bench step-sched` (bench.step_sched) without servers: the step/request ratios and the report
(its flags: tests/bench/cli/test_serving.py)."""

from __future__ import annotations

import pytest

from bench.step_sched import markdown, ratios


def phase(load, p50, p99, requests_per_s, requests=60, ok=60):
    return {
        "load": load,
        "latency_s": {"p50": p50, "p99": p99},
        "queue_s": {"p50": 0.002},
        "requests_per_s": requests_per_s,
        "images_per_s": 2 * requests_per_s,
        "requests": requests,
        "ok": ok,
    }


def synthetic_doc():
    return {
        "config": {"capacity_clients": 16, "open_s": 30.0},
        "capacity": {"request": {"requests_per_s": 4.0}, "step": {"requests_per_s": 5.0}},
        "open": {
            "request": [phase(0.5, 0.2, 0.8, 2.0), phase(0.9, 0.4, None, 3.6)],
            "step": [phase(0.5, 0.1, 0.4, 2.0, ok=58), phase(0.9, 0.3, 1.2, 0.0)],
        },
    }


def test_ratios_are_step_over_request_per_load_and_none_where_undefined():
    r = ratios(synthetic_doc())
    assert [x["load"] for x in r] == [0.5, 0.9]
    assert r[0]["p50_ratio"] == pytest.approx(0.5) and r[0]["p99_ratio"] == pytest.approx(0.5)
    assert r[0]["throughput_ratio"] == pytest.approx(1.0)
    assert r[1]["p50_ratio"] == pytest.approx(0.75) and r[1]["p99_ratio"] is None
    assert r[1]["throughput_ratio"] == pytest.approx(0.0)


def test_the_report_has_a_row_per_mode_and_load_and_the_ratios():
    doc = synthetic_doc()
    doc["ratios"] = ratios(doc)
    text = markdown(doc)
    assert "request level 4.00 req/s, step level 5.00 req/s" in text  # no busy share measured: none said
    doc["capacity"]["request"]["backend_busy"] = 0.94
    assert "request level 4.00 req/s (backend busy 0.94 of the time), step level 5.00 req/s." in markdown(doc)
    assert "| 50% | step | 2.00 | 2.00 | 4.00 | 100 | 400 | 2 | 2 |" in text  # 60 requests over 30 s, 2 refused
    assert "| 90% | request | 2.00 | 3.60 | 7.20 | 400 | - | 2 | 0 |" in text
    assert "| 50% | 0.50 | 0.50 | 1.00 |" in text and "| 90% | 0.75 | - | 0.00 |" in text


def test_the_report_says_where_the_servers_ran_and_their_warm_up_profiles():
    doc = synthetic_doc()
    doc["ratios"] = ratios(doc)
    doc["config"] |= {"backend": "torch", "device": "cuda", "max_batch_images": 16}
    doc["gpu"] = "NVIDIA H200, 143771 MiB, 580.00"
    profile = {"model": "teacher-48", "steps": 4, "ms_per_batch": {1: 5.0, 2: 5.25}, "gain": 1.9}
    doc["batch_profiles"] = {"request": [profile], "step": []}
    first = markdown(doc).splitlines()[0]
    assert first.startswith("Servers: backend torch on cuda (NVIDIA H200, 143771 MiB, 580.00); max batch images 16.")
    assert "(request server) teacher-48 at 4 steps, ms per batch 1: 5.0, 2: 5.2; gain 1.90." in first
    assert markdown(synthetic_doc() | {"ratios": []}).startswith(
        "Servers: backend default (onnxruntime) on cpu; max batch images from the warm-up profile."
    )


def test_the_plot_of_a_finished_run_is_drawn_from_its_step_json(run_bench, tmp_path):
    """A GPU machine without matplotlib brings back step.json and step.md; the plot is drawn here."""
    import json

    (tmp_path / "step.json").write_text(json.dumps(synthetic_doc()))
    assert run_bench(["step-sched", "--plot-from", str(tmp_path / "step.json")]) == 0
    assert (tmp_path / "step-latency.png").stat().st_size > 1000
