"""The `fewstep bench http` report (bench.http_report): the mix throughput, the ratios and the Markdown."""

from __future__ import annotations

import json

import pytest

from bench.http_report import markdown, mix_throughput, ratios
from bench.load import RequestClass


def test_mix_throughput_is_the_weighted_harmonic_mean():
    classes = [RequestClass("a", 4), RequestClass("b", 8)]
    # half the images at 20/s, half at 10/s: 2 images take 0.05 + 0.1 s
    assert mix_throughput({"a@4": 20.0, "b@8": 10.0}, classes, "a@4") == pytest.approx(2 / 0.15)


def _phase(level, images_per_s, p50, p99, kind="closed", load=None):
    row = {
        "kind": kind,
        "level": level,
        "images_per_s": images_per_s,
        "latency_s": {"p50": p50, "p95": p99, "p99": p99},
        "queue_s": {"p50": 0.001},
        "batches": {"m": {"batches": 10, "mean_images": 1.5, "by_le": {}}},
        "statuses": {"200": 10},
        "cpu": {"client_cores": 0.02},
    }
    if load is not None:
        row["load"] = load
    return row


def test_ratios_and_the_report_from_a_synthetic_run():
    classes = [RequestClass("m", 4)]
    doc = {
        "machine": {"cpu": "cpu", "cores": 2, "loadavg_at_start": [1, 1, 1], "loadavg_at_end": [1, 1, 1]},
        "started": "t0",
        "finished": "t1",
        "batch_profiles": [
            {"model": "m", "steps": 4, "ms_per_batch": {1: 10.0}, "gain": 1.0, "max_batch_images": 1, "max_wait_s": 0}
        ],
        "raw": {"rounds": [{"m@4": {1: 90.0, 4: 100.0}}, {"m@4": {1: 110.0, 4: 100.0}}]},
        "profiled": {
            "closed": [_phase(1, 50.0, 0.02, 0.03), _phase(16, 95.0, 0.1, 0.2), _phase(32, 96.0, 0.2, 0.3)],
            "saturated": [_phase(32, 94.0, 0.2, 0.3), _phase(32, 98.0, 0.2, 0.3)],
            "open": [_phase(40.0, 40.0, 0.03, 0.05, "open", 0.5)],
            "capacity_images_per_s": 96.0,
        },
        "fixed": {"open": [_phase(40.0, 40.0, 0.04, 0.06, "open", 0.5)]},
        "batch1": {"closed": [_phase(32, 88.0, 0.2, 0.3), _phase(32, 92.0, 0.2, 0.3)]},
    }
    doc["profiled"]["closed"][0]["computes_s"] = [0.015] * 50  # the lone requests' backend times
    r = ratios(doc, classes)
    assert r["raw_best_mix_images_per_s"] == pytest.approx(100.0)  # mean of the rounds: b=1 100, b=4 100
    assert r["http_over_raw"] == pytest.approx(0.96)
    assert r["hardware_batching_gain"] == pytest.approx(1.0)
    assert r["server_batching_gain"] == pytest.approx(96 / 90)
    assert r["p99_at_50pct_over_single"] == pytest.approx(0.05 / 0.02)
    # the FIFO floor: at least one service time plus the 5 ms outside the backend, queueing on top
    floor = r["fifo_floor_p99_at_50pct_s"]
    assert floor > 0.015 + 0.005
    assert r["p99_at_50pct_over_fifo_floor"] == pytest.approx(0.05 / floor)
    doc["ratios"] = r
    text = markdown(json.loads(json.dumps(doc)))  # the report reads the JSON as written
    assert "| HTTP saturated / raw best (96.0 / 100.0 images/s) | 0.96 | >= 0.9 |" in text
    assert "| fixed 8 / 10 ms | 50% |" in text
    assert f"| p99 at 50% load / that FIFO floor | {0.05 / floor:.2f} | <= 1.2 (issue 18) |" in text


def test_the_raw_limit_is_the_better_of_batch_1_and_the_sweeps_best_in_the_alternated_phases():
    classes = [RequestClass("a", 4), RequestClass("b", 8)]
    doc = {
        "raw": {
            "rounds": [{"a@4": {1: 10.0, 4: 30.0}, "b@8": {1: 10.0, 32: 20.0}}],
            "batch1": [{"batch": {"a@4": 1, "b@8": 1}, "per_key": {"a@4": 20.0, "b@8": 12.0}, "images_per_s": 15}],
            "best": [{"batch": {"a@4": 4, "b@8": 32}, "per_key": {"a@4": 30.0, "b@8": 10.0}, "images_per_s": 15}],
        },
        "profiled": {"closed": [_phase(1, 5.0, 0.1, 0.2), _phase(32, 15.0, 1.0, 2.0)], "open": []},
        "batch1": {"closed": [_phase(32, 15.0, 1.0, 2.0)]},
    }
    r = ratios(doc, classes)
    # a: batch 4 (30/s) beats batch 1; b: the sweep's batch 32 lost to batch 1 in the long phases
    assert r["raw_best_batch"] == {"a@4": 4, "b@8": 1}
    assert r["raw_best_mix_images_per_s"] == pytest.approx(2 / (1 / 30 + 1 / 12))
    assert r["hardware_batching_gain"] == pytest.approx((2 / (1 / 30 + 1 / 12)) / (2 / (1 / 20 + 1 / 12)))
