"""deploy/grafana: the committed dashboard is what dashboard.py (grafanalib) generates, its panels
query the provisioned datasource, and the panels the issue lists are there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import require_module

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy/grafana"

require_module("grafanalib", "grafanalib (dev extra) generates the dashboard")


def test_committed_dashboard_is_the_generated_one():
    out = subprocess.run(
        [sys.executable, str(GRAFANA / "dashboard.py")], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    committed = (GRAFANA / "dashboards/fewstep.json").read_text()
    assert out == committed, "regenerate: python deploy/grafana/dashboard.py > deploy/grafana/dashboards/fewstep.json"


def test_panels_cover_the_issue_and_use_the_provisioned_datasource():
    dashboard = json.loads((GRAFANA / "dashboards/fewstep.json").read_text())
    datasource = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())["datasources"][0]
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in (
        "Request rate",
        "Errors and rejections",
        "Latency (generation routes)",
        "Queue depth",
        "Batch size distribution",
        "Images / s",
        "Latency objective: requests over it",
        "Downgrades by reason and model",
        "Predicted and observed latency",
    ):
        assert wanted in titles, wanted
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
    latency = next(p for p in dashboard["panels"] if p["title"].startswith("Latency"))
    assert [t["legendFormat"] for t in latency["targets"]] == ["p50", "p95", "p99"]
    assert datasource["url"] == "http://prometheus:9090"


def test_provisioning_points_at_the_mounted_dashboards():
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/fewstep.yml").read_text())["providers"][0]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
