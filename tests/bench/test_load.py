"""The `fewstep bench http` load generator's pieces that need no server (bench.load): request classes,
the seeded mix, percentiles and summaries, and the FIFO floor (the generator itself runs against
real servers in tests/service/test_overload.py and tests/service/test_server.py)."""

from __future__ import annotations

import json

import pytest

from bench.load import Outcome, RequestClass, RequestMix, percentile, shapes_prompts, summarize


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


def test_the_fifo_floor_matches_the_m_m_1_formula():
    import math
    import random

    from bench.load import fifo_p99

    rng = random.Random(1)
    services = [rng.expovariate(1.0) for _ in range(20000)]  # mu = 1
    # M/M/1 sojourn time is exponential with rate mu - lambda: p99 = ln(100) / 0.5 at lambda = 0.5
    assert fifo_p99(services, rate=0.5, n=200_000) == pytest.approx(math.log(100) / 0.5, rel=0.1)
    assert fifo_p99([1.0], rate=1e-6, n=1000) == pytest.approx(1.0)  # no queue: the service time
    assert fifo_p99([0.05, 0.07], rate=20.0) is None  # utilisation 1.2: no floor, the queue grows forever
