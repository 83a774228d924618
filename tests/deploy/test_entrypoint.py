"""deploy/entrypoint.sh with a stand-in `fewstep` on PATH: the GPU path builds the TensorRT engines
into the cache before serving, the CPU path serves at once, and arguments reach `fewstep serve`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy/entrypoint.sh"

FAKE = """#!/bin/sh
echo "fewstep $*" >> "$CALLS"
if [ "$1" = build-engines ]; then
    [ "${FAIL_BUILD:-0}" = 1 ] && exit 7
    mkdir -p "$5" && touch "$5/denoiser-fake.engine"
fi
exit 0
"""


def run_entrypoint(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int, list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "fewstep"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(calls)}
    proc = subprocess.run(["/bin/sh", str(ENTRYPOINT), *args], env={**base, **env}, capture_output=True, timeout=30)
    return proc.returncode, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.skipif(shutil.which("sh") is None, reason="no /bin/sh")
def test_cpu_serves_at_once_with_arguments(tmp_path):
    rc, calls = run_entrypoint(tmp_path, {}, "--log-level", "debug")
    assert rc == 0 and calls == ["fewstep serve --log-level debug"]


def test_gpu_builds_engines_into_the_cache_then_serves(tmp_path):
    cache = tmp_path / "trt"
    env = {
        "FEWSTEP_BACKEND__KIND": "tensorrt",
        "FEWSTEP_BACKEND__ENGINE_CACHE": str(cache),
        "FEWSTEP_BACKEND__PRECISION": "fp16",
        "FEWSTEP_BUNDLES": "/opt/fewstep/bundles",
    }
    rc, calls = run_entrypoint(tmp_path, env)
    assert rc == 0
    assert calls == [
        f"fewstep build-engines --bundles /opt/fewstep/bundles --engine-cache {cache} --precision fp16",
        "fewstep serve",
    ]
    assert (cache / "denoiser-fake.engine").is_file()
    if shutil.which("flock"):
        assert (cache / ".build.lock").exists()


def test_gpu_auto_precision_builds_fp16_and_a_failed_build_never_serves(tmp_path):
    env = {"FEWSTEP_BACKEND__KIND": "tensorrt", "FEWSTEP_BACKEND__ENGINE_CACHE": str(tmp_path / "c")}
    rc, calls = run_entrypoint(tmp_path, {**env, "FEWSTEP_BACKEND__PRECISION": "auto"})
    assert rc == 0 and "--precision fp16" in calls[0]
    (tmp_path / "calls").unlink()
    rc, calls = run_entrypoint(tmp_path, {**env, "FAIL_BUILD": "1"})
    assert rc == 7 and len(calls) == 1 and calls[0].startswith("fewstep build-engines")
    assert os.access(ENTRYPOINT, os.X_OK)
