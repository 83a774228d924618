"""Every metric the Grafana dashboard and the alert rules query is one the service exports:
scraped from the real app (in process, fake backend) after traffic. The live compose test
repeats the check against the running container."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.queries import exported_names, referenced_metrics
from tests.service.api.conftest import serving


def test_dashboard_and_rules_query_only_exported_metrics():
    with serving() as client:
        client.post("/generate", json={"prompt": "a red circle", "n": 2})
        client.post("/generate", json={"prompt": "p", "model": "no-such-model"})
        text = client.get("/metrics").text
    exported = exported_names(text_string_to_metric_families(text))
    referenced = referenced_metrics()
    assert len(referenced) >= 10
    missing = sorted(referenced - exported)
    assert not missing, f"queried but never exported: {missing}"
