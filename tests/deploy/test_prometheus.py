"""deploy/prometheus: promtool on the config and the rules, and the rules' unit tests."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy/prometheus"


@pytest.fixture(autouse=True)
def _promtool() -> None:
    require_tool("promtool", "Debian's prometheus package (scripts/install-system-deps.sh)")


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


@contextlib.contextmanager
def serve_prometheus(work: Path, flag: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Debian's Prometheus with a lifecycle flag, on a free port: (its address, the process)."""
    require_tool("prometheus", "Debian's prometheus package (scripts/install-system-deps.sh)")
    work.mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (work / "prometheus.yml").write_text("global:\n  scrape_interval: 15s\n")
    cmd = ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}"]
    cmd += [f"--web.listen-address=127.0.0.1:{port}", flag]
    url = f"http://127.0.0.1:{port}"
    with (work / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            end = time.monotonic() + 60
            while True:
                assert proc.poll() is None, (work / "prometheus.log").read_text()[-2000:]
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/-/ready", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < end, "Prometheus not ready after 60 s"
                time.sleep(0.2)
            yield url, proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)


def test_the_compose_default_leaves_the_lifecycle_api_off_and_the_opt_in_turns_it_on(tmp_path):
    from tests.deploy.test_compose import LIFECYCLE_ON, compose_lifecycle_flag

    with serve_prometheus(tmp_path / "default", compose_lifecycle_flag()) as (url, proc):
        assert httpx.post(f"{url}/-/reload", timeout=10).status_code == 403
        assert httpx.post(f"{url}/-/quit", timeout=10).status_code == 403
        time.sleep(0.5)
        assert proc.poll() is None  # still running: whoever reaches the port cannot stop it
    with serve_prometheus(tmp_path / "opt-in", LIFECYCLE_ON) as (url, _):
        assert httpx.post(f"{url}/-/reload", timeout=10).status_code == 200
