"""scripts/export-bundle.sh: the arguments `make bundles` and the image's bundles stage export with."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.defaults import students

ROOT = Path(__file__).resolve().parents[2]


def _args(name: str, *extra: str) -> subprocess.CompletedProcess:
    # `echo` stands in for `fewstep export`: the test reads the arguments it would get.
    env = {"PATH": "/usr/bin:/bin", "FEWSTEP_EXPORT": "echo"}
    return subprocess.run(
        ["bash", str(ROOT / "scripts/export-bundle.sh"), name, f"/out/{name}", *extra],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["teacher", *students()])
def test_every_served_model_exports_with_its_row_and_its_measurement(name):
    done = _args(name, "--cache-dir", "/c")
    assert done.returncode == 0, done.stderr
    args = done.stdout.split()
    model = "models/teacher" if name == "teacher" else f"models/students/{name}"
    assert args[:4] == ["--model", model, "--out", f"/out/{name}"]
    row = Path(ROOT, args[args.index("--evaluation") + 1])
    assert row.is_file() and row.parent.name in ("teacher", "students")
    measured = ROOT / "results/precision" / f"{name}.json"
    assert ("--precision" in args) == measured.is_file()
    if measured.is_file():
        assert args[args.index("--precision") + 1] == f"results/precision/{name}.json"
    assert args[-2:] == ["--cache-dir", "/c"]  # the caller's options pass through


def test_an_unknown_model_is_named():
    done = _args("no-such-student")
    assert done.returncode == 1 and "no model 'no-such-student'" in done.stderr and not done.stdout
    usage = subprocess.run(["bash", str(ROOT / "scripts/export-bundle.sh")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
