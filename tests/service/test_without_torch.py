"""The service needs neither torch nor the offline side: every service module imports, and the app
serves a request on the fake backend, with `torch`, `transformers` and `distill` made unimportable.

A `sys.meta_path` blocker in a fresh interpreter stands in for a venv with the base package alone
(which CI cannot afford on every run): an import of a blocked module anywhere under `service`,
even a lazy one on the request path, fails the test. The optional torch backend is the one
module that may import torch, and it does so only when chosen.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKED = ("torch", "transformers", "distill")

CHECK = f"""
import importlib, pkgutil, sys, time

class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, Blocker())

import service
failed = {{}}
for m in pkgutil.walk_packages(service.__path__, "service."):
    try:
        importlib.import_module(m.name)
    except Exception as e:
        failed[m.name] = repr(e)
assert not failed, failed

from fastapi.testclient import TestClient
from service.app import create_app
from service.fakes import fake_pipeline
from service.settings import ServiceSettings

for scheduling in ("request", "step"):
    settings = ServiceSettings(max_batch_images=4, max_wait_s=0.0, scheduling=scheduling)
    with TestClient(create_app(settings, [fake_pipeline("fake")])) as client:
        end = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < end, "never ready"
            time.sleep(0.01)
        r = client.post("/generate", json={{"prompt": "a red circle", "seed": 1, "n": 2}})
        assert r.status_code == 200, r.text
        r = client.post("/generate", json={{"prompt": "p", "steps": 3}})
        assert r.status_code == 422 and r.json()["error"]["param"] == "steps", r.text
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {BLOCKED!r})
assert not loaded, loaded
print("ok")
"""


def test_every_service_module_and_the_app_work_without_torch_or_distill():
    r = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_the_service_tests_do_not_import_the_offline_side():
    """What the check above proves for the code, this keeps true for the tests of it."""
    pattern = re.compile(r"^\s*(from|import)\s+distill\b|importorskip\(\s*[\"']distill", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests" / "service").rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert offenders == [], f"service tests importing distill: {offenders}"
