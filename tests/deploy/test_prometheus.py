"""deploy/prometheus: promtool on the config and the rules, and the rules' unit tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy/prometheus"

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="no promtool (Debian's prometheus: scripts/install-system-deps.sh)"
)


def promtool(*args: str) -> str:
    proc = subprocess.run(["promtool", *args], cwd=PROM, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_config_is_valid():
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")


def test_rules_are_valid():
    assert "SUCCESS" in promtool("check", "rules", *[str(p) for p in sorted((PROM / "rules").glob("*.yml"))])


def test_alert_rules_unit_tests_pass():
    assert "SUCCESS" in promtool("test", "rules", "tests/fewstep.test.yml")


def test_every_alert_the_issue_names_exists_and_is_tested():
    rules = (PROM / "rules/fewstep.yml").read_text()
    tests = (PROM / "tests/fewstep.test.yml").read_text()
    alerts = ("FewstepDown", "FewstepHighLatencyP99", "FewstepHighErrorRatio", "FewstepQueueSaturated")
    for alert in (*alerts, "FewstepSloViolations"):
        assert f"alert: {alert}" in rules and f"alertname: {alert}" in tests, alert
