"""`fewstep bench http` pieces that need no server: the request mix, the figures, the ratios and the
report (the load generator itself runs against real servers in tests/service/test_overload.py)."""

from __future__ import annotations

import json

import pytest

from bench.http_report import markdown, mix_throughput, ratios
from bench.load import Outcome, RequestClass, RequestMix, percentile, shapes_prompts, summarize
from bench.server import histogram_delta


def test_request_classes_parse_from_the_command_line_form():
    c = RequestClass.parse("model=mm-alt-k4,steps=4,guidance=1.5|3|4.5,n=2,weight=3")
    assert c == RequestClass("mm-alt-k4", 4, (1.5, 3.0, 4.5), 2, 3.0)
    assert c.label == "mm-alt-k4/k4/w1.5|3|4.5/n2"
    assert RequestClass.parse("") == RequestClass()
    with pytest.raises(ValueError, match="unknown key"):
        RequestClass.parse("model=a,stpes=4")
    with pytest.raises(ValueError, match="key=value"):
        RequestClass.parse("model")


def test_the_mix_is_seeded_weighted_and_builds_valid_bodies():
    classes = [RequestClass("a", 4, (1.0, 2.0)), RequestClass("b", 8, n=2, weight=3)]
    prompts = shapes_prompts(16)
    assert len(set(prompts)) == 16
    m1, m2 = RequestMix(classes, prompts, seed=5), RequestMix(classes, prompts, seed=5)
    draws = [m1.next() for _ in range(400)]
    assert draws == [m2.next() for _ in range(400)]
    share_b = sum(i == 1 for i, _ in draws) / len(draws)
    assert 0.68 < share_b < 0.82  # weight 3 of 4
    for i, body in draws[:20]:
        b = json.loads(body)
        assert b["model"] == classes[i].model and b["steps"] == classes[i].steps and b["n"] == classes[i].n
        assert b["prompt"] in prompts and 0 <= b["seed"] < 2**30
        assert ("guidance_scale" in b) == (i == 0)
    assert m1.images_per_request() == pytest.approx((1 * 1 + 3 * 2) / 4)


def test_percentiles_and_summary():
    assert percentile([], 50) is None
    assert percentile([3, 1, 2, 4], 50) == 2 and percentile(range(1, 101), 99) == 99
    outcomes = [Outcome(0, 1, 200, float(i), 0.1 * (i + 1), 0.01, 0.05) for i in range(10)]
    outcomes += [Outcome(0, 1, 429, 11.0, 0.001, retry_after="2"), Outcome(0, 1, 0, 12.0, 0.001)]
    s = summarize(outcomes, wall_s=5.0)
    assert s["ok"] == 10 and s["images_per_s"] == 2.0 and s["statuses"] == {"0": 1, "200": 10, "429": 1}
    assert s["latency_s"]["p50"] == pytest.approx(0.5) and s["rejection_rate"] == pytest.approx(2 / 12)
    assert s["retry_after"] == ["2"]


def test_mix_throughput_is_the_weighted_harmonic_mean():
    classes = [RequestClass("a", 4), RequestClass("b", 8)]
    # half the images at 20/s, half at 10/s: 2 images take 0.05 + 0.1 s
    assert mix_throughput({"a@4": 20.0, "b@8": 10.0}, classes, "a@4") == pytest.approx(2 / 0.15)


def test_batch_histogram_deltas():
    before = {"m": {"1.0": 2, "2.0": 2, "4.0": 3, "+Inf": 3, "sum": 5, "count": 3}}
    after = {"m": {"1.0": 4, "2.0": 5, "4.0": 8, "+Inf": 8, "sum": 18, "count": 8}}
    d = histogram_delta(before, after)["m"]
    assert d["batches"] == 5 and d["mean_images"] == pytest.approx(13 / 5)
    assert d["by_le"] == {"1.0": 2, "2.0": 1, "4.0": 2}


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
    r = ratios(doc, classes)
    assert r["raw_best_mix_images_per_s"] == pytest.approx(100.0)  # mean of the rounds: b=1 100, b=4 100
    assert r["http_over_raw"] == pytest.approx(0.96)
    assert r["hardware_batching_gain"] == pytest.approx(1.0)
    assert r["server_batching_gain"] == pytest.approx(96 / 90)
    assert r["p99_at_50pct_over_single"] == pytest.approx(0.05 / 0.02)
    doc["ratios"] = r
    text = markdown(json.loads(json.dumps(doc)))  # the report reads the JSON as written
    assert "| HTTP saturated / raw best (96.0 / 100.0 images/s) | 0.96 | >= 0.9 |" in text
    assert "| fixed 8 / 10 ms | 50% |" in text


def test_the_fifo_floor_matches_the_m_m_1_formula():
    import math
    import random

    from bench.load import fifo_p99

    rng = random.Random(1)
    services = [rng.expovariate(1.0) for _ in range(20000)]  # mu = 1
    # M/M/1 sojourn time is exponential with rate mu - lambda: p99 = ln(100) / 0.5 at lambda = 0.5
    assert fifo_p99(services, rate=0.5, n=200_000) == pytest.approx(math.log(100) / 0.5, rel=0.1)
    assert fifo_p99([1.0], rate=1e-6, n=1000) == pytest.approx(1.0)  # no queue: the service time


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
