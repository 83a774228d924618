"""scripts/crash-report.sh: a test process that dies of a segfault on a worker thread (CI saw one
that printed nothing) is named by the core file it leaves: its thread's native and Python stacks."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
CRASH = """
import ctypes, threading, time
def a_worker_that_faults():
    ctypes.string_at(0)
threading.Thread(target=a_worker_that_faults, name="worker").start()
time.sleep(30)
"""


def _allow_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def test_a_crash_on_a_worker_thread_is_reported_with_its_python_frames(tmp_path):
    require_tool("gdb", "gdb prints the stacks (scripts/install-system-deps.sh installs it)")
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if pattern.startswith("|") or "/" in pattern:
        pytest.skip(f"cores go elsewhere on this machine (core_pattern {pattern!r}), not to the process's directory")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "python").symlink_to(Path(sys.executable).resolve())
    proc = subprocess.run([sys.executable, "-c", CRASH], cwd=tmp_path, preexec_fn=_allow_core, timeout=60)
    assert proc.returncode == -11
    if not list(tmp_path.glob("core*")):
        pytest.skip("no core file was written (core dumps are off for this user)")
    out = subprocess.run(
        ["bash", str(ROOT / "scripts" / "crash-report.sh"), str(tmp_path)], capture_output=True, text=True, timeout=120
    ).stdout
    assert "=== crash report" in out and "SIGSEGV" in out
    assert "a_worker_that_faults" in out  # the faulting thread's Python frame (py-bt)
    assert "$1 = 1\n" in out  # si_code SEGV_MAPERR: a real bad pointer (128, SI_KERNEL, would be a bad signal stack)


def test_no_core_no_report(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "scripts" / "crash-report.sh"), str(tmp_path)], capture_output=True)
    assert out.returncode == 0 and out.stdout == b""
