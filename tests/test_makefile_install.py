"""What `make serve`, `make bundles` and `make test` install, read off make's dry run (`make -n`).

The lean serve install is a property of the Makefile's rules: the served process runs from the
serving venv (requirements/serve.lock, synced exactly), the export venv (torch) is installed only
when a bundle is out of date, and only the development venv gets the development lock. A dry run in
a copy of the Makefile with stand-in model files shows which commands each case would run, without
running them (recursive makes run in dry-run mode too).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["models/teacher", "models/students/mm-alt-k8", "models/students/pd-k4"]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")


def students() -> list[str]:
    return re.search(r"^STUDENTS := (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """The Makefile, the locks and pyproject, stand-in weights, and bundles newer than them."""
    shutil.copy(ROOT / "Makefile", tmp_path)
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    shutil.copytree(ROOT / "requirements", tmp_path / "requirements")
    for model in ["models/teacher", *(f"models/students/{s}" for s in students())]:
        (tmp_path / model).mkdir(parents=True)
        for name in ("model.safetensors", "config.json"):
            (tmp_path / model / name).write_text("{}")
    past = time.time() - 3600
    for path in (tmp_path / "models").rglob("*"):
        os.utime(path, (past, past))
    for bundle in ["teacher", *students()]:
        (tmp_path / "bundles" / bundle).mkdir(parents=True)
        (tmp_path / "bundles" / bundle / "manifest.json").write_text("{}")
    return tmp_path


def dry_run(tree: Path, *args: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", *args, f"CACHE_HOME={tree / 'cache'}"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.replace("\\\n", " ").splitlines()


def installs(lines: list[str]) -> list[str]:
    return [line for line in lines if re.search(r"uv pip (sync|install)", line)]


def test_serve_with_bundles_up_to_date_installs_only_the_serving_venv(tree):
    lines = dry_run(tree, "serve")
    assert not [line for line in lines if "export" in line], "no export venv and no export when bundles are current"
    pip = installs(lines)
    synced = [line for line in pip if "pip sync" in line and "requirements/serve.lock" in line]
    assert synced and "--python .venv-serve/" in synced[0]
    assert not [line for line in pip if "dev.lock" in line or "--python .venv/" in line]
    serve = [line for line in lines if " serve --bundles bundles" in line]
    assert len(serve) == 1 and ".venv-serve/bin/fewstep serve" in serve[0]


def test_an_out_of_date_bundle_installs_the_export_venv_first_and_only_that_bundle_is_exported(tree):
    student = students()[0]
    (tree / "models/students" / student / "model.safetensors").touch()  # newer than its bundle
    lines = dry_run(tree, "serve")
    exports = [i for i, line in enumerate(lines) if "scripts/export-bundle.sh" in line]
    assert len(exports) == 1 and lines[exports[0]].endswith(f"scripts/export-bundle.sh {student} bundles/{student}")
    assert lines[exports[0]].startswith('FEWSTEP_EXPORT=".venv-export/bin/fewstep export --cache-dir ')
    synced = [i for i, line in enumerate(lines) if "pip sync" in line and "requirements/export.lock" in line]
    assert synced and synced[0] < exports[0]
    if Path("/opt/wheels").is_dir():  # torch's CPU build comes from the file on disk (TORCH_WHEELS)
        assert "--find-links /opt/wheels" in lines[synced[0]]


def test_a_fresh_clone_builds_every_bundle_in_the_export_venv(tree):
    shutil.rmtree(tree / "bundles")
    lines = dry_run(tree, "serve")
    # scripts/export-bundle.sh NAME OUT, run with the export venv's fewstep (tests/scripts/test_export_bundle.py
    # checks the arguments it passes on)
    exported = re.findall(r"scripts/export-bundle\.sh (\S+) (\S+)", " ".join(lines))
    assert exported == [(m, f"bundles/{m}") for m in ["teacher", *students()]]
    calls = [line for line in lines if "scripts/export-bundle.sh" in line]
    assert all(line.startswith('FEWSTEP_EXPORT=".venv-export/bin/fewstep export') for line in calls)


def test_make_test_installs_the_development_lock_into_the_development_venv_without_removing_anything(tree):
    lines = dry_run(tree, "test")
    pip = installs(lines)
    assert any("pip install" in line and "requirements/dev.lock" in line and "--python .venv/" in line for line in pip)
    assert not [line for line in pip if "pip sync" in line], "a developer's own additions stay"
    assert lines[-1].endswith(".venv/bin/python -m pytest")


def test_every_lock_install_is_hashed_and_complete(tree):
    shutil.rmtree(tree / "bundles")
    for target in ("serve", "test"):
        for line in installs(dry_run(tree, target)):
            if ".lock" in line:  # `sync` installs exactly the list; `install` must be told not to resolve
                assert "--require-hashes" in line and ("pip sync" in line or "--no-deps" in line), line
            else:  # the project itself, from the source tree, with the lock's setuptools
                assert "--no-deps --no-build-isolation -e ." in line, line


def test_uv_comes_from_its_hashed_lock_once_per_machine(tree):
    lines = dry_run(tree, "install-serve")
    boot = [line for line in lines if "requirements/tools.lock" in line]
    assert len(boot) == 1 and "--require-hashes" in boot[0]
    assert f"{tree / 'cache'}/fewstep/uv-" in boot[0], "kept beside the user's caches, not in the clone"


def test_a_changed_lock_reinstalls_its_venv(tree):
    key = re.search(r"\.venv-serve/\.installed-(\d+)", "\n".join(dry_run(tree, "install-serve"))).group(1)
    with (tree / "requirements/serve.lock").open("a") as f:
        f.write("# changed\n")
    key2 = re.search(r"\.venv-serve/\.installed-(\d+)", "\n".join(dry_run(tree, "install-serve"))).group(1)
    assert key != key2


@pytest.mark.slow
def test_install_serve_for_real_gives_a_service_without_torch(tmp_path):
    """`make install-serve` in a copy of the source tree: uv from its lock, the serving lock synced,
    fewstep installed; the service imports, torch and pytest do not. Needs the package registry (or
    a warm uv cache): a few seconds warm, about a minute cold."""
    for name in ("Makefile", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path)
    for name in ("requirements", "fewstep", "fewstep_cli", "shapesworld", "distill", "service", "bench"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    cache = os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS", "VIRTUAL_ENV"))}
    subprocess.run(["make", "install-serve", f"CACHE_HOME={cache}"], cwd=tmp_path, env=env, check=True, timeout=600)
    python = tmp_path / ".venv-serve/bin/python"
    probe = (
        "import importlib.util as u, service.app, service.backends.onnxruntime, service.backends.openvino; "
        "print(*[m for m in ('torch', 'transformers', 'pytest', 'ruff') if u.find_spec(m)])"
    )
    found = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=True, env=env).stdout
    assert found.strip() == ""
    assert (tmp_path / ".venv-serve/bin/fewstep").is_file()
