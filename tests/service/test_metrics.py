"""/metrics: the families the issue lists, base units, buckets past 60 s, bounded labels, promtool-clean."""

from __future__ import annotations

import subprocess

from prometheus_client.parser import text_string_to_metric_families

from service.metrics import LATENCY_BUCKETS_S
from tests.conftest import require_tool
from tests.service.api.conftest import serving


def scrape_after_traffic() -> str:
    with serving() as client:
        for i in range(3):
            client.post("/generate", json={"prompt": f"prompt number {i}", "n": 2})
        client.post("/generate", json={"prompt": "p", "steps": 3})
        client.post("/generate", json={"prompt": "p", "model": "a-model-that-is-not-there"})
        client.get("/no/such/path/123")
        return client.get("/metrics").text


def test_every_listed_metric_is_exported():
    families = {f.name: f for f in text_string_to_metric_families(scrape_after_traffic())}
    expected = {
        "fewstep_http_request_duration_seconds": "histogram",
        "fewstep_queue_wait_seconds": "histogram",
        "fewstep_batch_size_images": "histogram",
        "fewstep_batch_compute_seconds": "histogram",
        "fewstep_images_generated": "counter",
        "fewstep_requests_rejected": "counter",
        "fewstep_queue_depth_requests": "gauge",
        "fewstep_in_flight_requests": "gauge",
        "fewstep_model_info": "gauge",
    }
    for name, kind in expected.items():
        assert families[name].type == kind, name
    images = {
        s.labels["model"]: s.value for s in families["fewstep_images_generated"].samples if s.name.endswith("_total")
    }
    assert images["fake"] == 6


def test_labels_are_bounded_no_prompts_paths_or_unknown_models():
    text = scrape_after_traffic()
    assert "prompt number" not in text and "a-model-that-is-not-there" not in text and "/no/such" not in text
    assert 'route="unmatched"' in text and 'route="/generate"' in text


def test_latency_buckets_reach_past_a_minute():
    assert max(LATENCY_BUCKETS_S) >= 60
    assert 'le="60.0"' in scrape_after_traffic()


def test_promtool_check_metrics_reports_nothing():
    require_tool("promtool", "promtool checks the exposition format (scripts/install-system-deps.sh)")
    r = subprocess.run(["promtool", "check", "metrics"], input=scrape_after_traffic(), capture_output=True, text=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
