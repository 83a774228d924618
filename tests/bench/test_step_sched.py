"""`fewstep bench step` (bench.step_sched) without servers: the step/request ratios and the report."""

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
    assert "request level 4.00 req/s, step level 5.00 req/s" in text
    assert "| 50% | step | 2.00 | 2.00 | 4.00 | 100 | 400 | 2 | 2 |" in text  # 60 requests over 30 s, 2 refused
    assert "| 90% | request | 2.00 | 3.60 | 7.20 | 400 | - | 2 | 0 |" in text
    assert "| 50% | 0.50 | 0.50 | 1.00 |" in text and "| 90% | 0.75 | - | 0.00 |" in text
