"""deploy/k8s: every manifest valid against the Kubernetes schemas (kubernetes-validate, strict),
and wired together: selectors, probes, resources, HPA targets, PDB, settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.settings import ENV_PREFIX, load_settings
from tests.conftest import require_module

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
MANIFESTS = sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def by_kind() -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for p in MANIFESTS for d in docs(p) if p.parent == K8S}


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid(path):
    require_module("kubernetes_validate", "kubernetes-validate (dev extra) checks the manifests")
    cmd = [sys.executable, "-m", "kubernetes_validate", "--strict", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kustomization_lists_the_base_manifests():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == ["deployment.yaml", "hpa.yaml", "pdb.yaml", "service.yaml"]


@pytest.mark.parametrize("name", ["fewstep", "fewstep-gpu"])
def test_deployments_probe_limit_and_run_as_the_image_user(name, monkeypatch):
    dep = by_kind()[("Deployment", name)]
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (c,) = pod["spec"]["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001 and pod["spec"]["securityContext"]["runAsNonRoot"]
    assert ":" in c["image"] and not c["image"].endswith(":latest")
    env = {e["name"]: e["value"] for e in c["env"] if "value" in e}
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    for key, value in env.items():
        assert key.startswith(ENV_PREFIX)
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert pod["spec"]["terminationGracePeriodSeconds"] > settings.drain_timeout_s + 5  # drain + preStop sleep
    if name == "fewstep":  # batch bounds from the warm-up profile on the pod's own cores
        assert settings.max_batch_images is None and settings.max_wait_s is None
    if name == "fewstep-gpu":
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert settings.backend.kind == "tensorrt"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert settings.backend.engine_cache in mounts
        # the engine build happens before the server listens: the startup probe waits for it
        probe = c["startupProbe"]
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 600


def test_service_hpa_and_pdb_select_the_deployments():
    objs = by_kind()
    service = objs[("Service", "fewstep")]
    for name in ("fewstep", "fewstep-gpu"):
        labels = objs[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        ports = objs[("Deployment", name)]["spec"]["template"]["spec"]["containers"][0]["ports"]
        assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in ports}
    pdb = objs[("PodDisruptionBudget", "fewstep")]
    cpu_labels = objs[("Deployment", "fewstep")]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= cpu_labels.items()
    assert pdb["spec"]["minAvailable"] < objs[("Deployment", "fewstep")]["spec"]["replicas"]
    hpa = objs[("HorizontalPodAutoscaler", "fewstep")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fewstep"}
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"


def test_queue_depth_hpa_reads_the_metric_the_adapter_serves_and_the_service_exports():
    (hpa,) = docs(K8S / "custom-metrics/hpa-queue-depth.yaml")
    (adapter,) = docs(K8S / "custom-metrics/prometheus-adapter.yaml")
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    assert metric in {r["name"]["as"] for r in rules}
    assert metric == "fewstep_queue_depth_images"
    assert "fewstep_queue_depth_images" in (ROOT / "service/metrics.py").read_text()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "fewstep"


@pytest.mark.parametrize("name", ["fewstep", "fewstep-gpu"])
def test_api_keys_come_from_a_required_secret_and_never_from_the_manifest(name):
    (c,) = by_kind()[("Deployment", name)]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    keys = env["FEWSTEP_API_KEYS"]
    assert "value" not in keys, "a key written into the manifest is a key committed to git"
    ref = keys["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("fewstep-api-keys", "keys")
    assert ref.get("optional", False) is False  # no Secret: no pod, rather than an open service
    # nothing else that looks like a credential is set in clear text
    for e in c["env"]:
        if any(word in e["name"] for word in ("KEY", "TOKEN", "PASSWORD", "SECRET")):
            assert "valueFrom" in e, e["name"]
    # the name the Deployments read is the one the README tells operators to create
    assert "kubectl create secret generic fewstep-api-keys --from-literal=keys=" in (K8S / "README.md").read_text()
    # and nothing in deploy/k8s creates it with a value
    secrets = [d for p in MANIFESTS for d in docs(p) if d.get("kind") == "Secret"]
    assert secrets == []
