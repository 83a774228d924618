"""scripts/install-system-deps.sh and .ci/run: CI stops when the end-to-end tools cannot be
installed, and runs the suite with FEWSTEP_REQUIRE_TOOLS=1 so that no such test can skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts/install-system-deps.sh"
TOOLS = ("prometheus", "promtool", "chromium", "dockerd", "debootstrap", "gdb")


def run_with(tmp_path: Path, present: tuple[str, ...], uid: int | None = None) -> subprocess.CompletedProcess:
    """The script on a PATH that holds only `present` (fake executables) and the coreutils it uses;
    `uid` fakes `id -u`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sort").symlink_to(shutil.which("sort") or "/usr/bin/sort")
    if uid is None:
        (bin_dir / "id").symlink_to(shutil.which("id") or "/usr/bin/id")
    else:
        (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
        (bin_dir / "id").chmod(0o755)
    for tool in present:
        (bin_dir / tool).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / tool).chmod(0o755)
    bash = shutil.which("bash") or "/bin/bash"
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path)}
    return subprocess.run([bash, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_a_tool_that_cannot_be_installed_is_an_error(tmp_path):
    proc = run_with(tmp_path, present=("prometheus", "promtool"))  # no apt-get to install the rest
    assert proc.returncode != 0
    for tool in ("chromium", "docker.io", "debootstrap", "gdb"):
        assert tool in proc.stderr


def test_nothing_to_do_when_every_tool_is_there(tmp_path):
    proc = run_with(tmp_path, present=TOOLS)
    assert proc.returncode == 0, proc.stderr
    assert "present" in proc.stdout


def test_no_root_and_no_sudo_is_an_error(tmp_path):
    proc = run_with(tmp_path, present=("apt-get",), uid=1000)
    assert proc.returncode != 0 and "not root and no sudo" in proc.stderr


def test_ci_stops_on_a_failed_install_and_requires_the_tools_before_any_test():
    text = (ROOT / ".ci/run").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    install = code.index("scripts/install-system-deps.sh")
    switch = code.index("export FEWSTEP_REQUIRE_TOOLS=1")
    first_test = min(m.start() for m in re.finditer(r"make test", code))
    assert install < switch < first_test
    assert "set -euo pipefail" in code
    install_line = code[code.rindex("\n", 0, install) + 1 : code.index("\n", install)]
    assert "|| echo" not in install_line and "|| true" not in install_line  # a failure is not swallowed
    proc = subprocess.run(["bash", "-n", str(ROOT / ".ci/run")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
