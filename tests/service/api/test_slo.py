"""The quality hint and the routing in both APIs, through the real app (both schedulers): the reply
says what was asked, what served and why, in JSON and headers; a bad hint names the field; under a
latency objective a burst moves requests, and /metrics counts every move."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from service.fakes import FakeDenoiser, evaluation_row, fake_pipeline
from tests.service.api.conftest import assert_error, serving

TWO = "a green cross on the left and a pink circle on the right"


def family(per_image_s: float = 0.0):
    rows8, rows4 = {"r": evaluation_row(8, 0.954, 0.642)}, {"r": evaluation_row(4, 0.929, 0.511)}
    return [
        fake_pipeline("k8", FakeDenoiser(per_image_s=per_image_s), steps=(8,), network_input=True, evaluation=rows8),
        fake_pipeline("k4", FakeDenoiser(per_image_s=per_image_s), steps=(4,), network_input=True, evaluation=rows4),
    ]


def test_every_reply_says_what_was_asked_what_served_and_why():
    with serving(family()) as client:
        r = client.post("/generate", json={"prompt": TWO, "seed": 1})
        png = client.post("/generate", json={"prompt": TWO, "seed": 1}, headers={"Accept": "image/png"})
        openai = client.post("/v1/images/generations", json={"prompt": TWO})
    assert r.status_code == 200, r.text
    assert r.json()["routing"] == {
        "quality": "best", "asked_model": "k8", "asked_steps": 8, "model": "k8", "steps": 8,
        "reason": "as_asked", "prompt_class": "two_objects", "predicted_s": None, "objective_s": None,
    }  # fmt: skip
    for reply in (r, png, openai):
        h = reply.headers
        assert (h["x-fewstep-asked-model"], h["x-fewstep-model"], h["x-fewstep-steps"]) == ("k8", "k8", "8")
        assert (h["x-fewstep-quality"], h["x-fewstep-route-reason"]) == ("best", "as_asked")
        assert "x-fewstep-objective-seconds" not in h


def test_fast_moves_the_request_and_says_so_on_both_routes():
    with serving(family()) as client:
        r = client.post("/generate", json={"prompt": TWO, "quality": "fast"})
        openai = client.post("/v1/images/generations", json={"prompt": TWO, "quality": "fast"})
    body = r.json()
    assert (body["model"], body["steps"]) == ("k4", 4)
    assert (body["routing"]["asked_model"], body["routing"]["reason"]) == ("k8", "fast")
    assert openai.status_code == 200 and openai.headers["x-fewstep-model"] == "k4"
    assert openai.headers["x-fewstep-route-reason"] == "fast" and set(openai.json()) == {"created", "data"}


def test_an_unknown_quality_is_refused_naming_the_field():
    with serving(family()) as client:
        native = client.post("/generate", json={"prompt": TWO, "quality": "great"})
        openai = client.post("/v1/images/generations", json={"prompt": TWO, "quality": "hd"})
    assert "quality" in assert_error(native, 422, param="quality")["message"]
    assert_error(openai, 400, param="quality")


def test_under_an_objective_a_burst_moves_requests_and_metrics_count_every_move():
    settings = {"max_batch_images": 2, "batch_profile_budget_s": 0.3, "slo": {"p99_ms": 200}}
    with serving(family(per_image_s=0.004), **settings) as client:
        with ThreadPoolExecutor(16) as pool:
            replies = list(pool.map(lambda i: client.post("/generate", json={"prompt": TWO, "seed": i}), range(24)))
        best = client.post("/generate", json={"prompt": TWO, "quality": "best"})
        metrics = client.get("/metrics").text
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
    moved = [r for r in replies if r.json()["routing"]["reason"] != "as_asked"]
    assert moved, "a burst of 24 requests at 32 ms each should not fit a 200 ms objective"
    for r in moved:
        h, routing = r.headers, r.json()["routing"]
        assert (h["x-fewstep-asked-model"], h["x-fewstep-model"], routing["model"]) == ("k8", "k4", "k4")
        assert h["x-fewstep-route-reason"] == routing["reason"] in ("pressure", "slo", "unmet")
        assert float(h["x-fewstep-objective-seconds"]) == 0.2 and float(h["x-fewstep-predicted-seconds"]) > 0
    assert best.json()["model"] == "k8" and best.json()["routing"]["quality"] == "best"
    samples = [s for f in text_string_to_metric_families(metrics) for s in f.samples]
    counted = sum(s.value for s in samples if s.name == "fewstep_routing_total" and s.labels["reason"] != "as_asked")
    assert counted == len(moved)
    finished = sum(s.value for s in samples if s.name == "fewstep_slo_requests_total")
    assert finished == len(replies) + 1
    assert any(s.name == "fewstep_slo_objective_seconds" and s.value == 0.2 for s in samples)
