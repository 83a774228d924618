"""A quiet start: the package metadata builds without setuptools' deprecation banner (which `pip
install -e .` prints on every install), and the service's own modules import without warnings."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_metadata_builds_without_deprecation_warnings():
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert [str(w.message) for w in caught] == []
    assert dist.metadata.license_expression == "Apache-2.0"


def test_the_service_imports_and_builds_its_app_without_warnings():
    code = (
        "from service.app import create_app; from service.fakes import fake_pipeline; "
        "create_app(pipelines=[fake_pipeline()]).openapi()"
    )
    r = subprocess.run([sys.executable, "-W", "error", "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
