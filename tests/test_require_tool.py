"""tests/conftest.py's `require_tool` / `require_module`: a missing tool skips by default and fails
under FEWSTEP_REQUIRE_TOOLS=1 (what .ci/run sets); a present one is returned either way."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REQUIRE_TOOLS, require_module, require_tool

ABSENT = "fewstep-no-such-tool-4e1f"


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_a_missing_tool_skips_with_its_reason_when_not_required(monkeypatch, value):
    monkeypatch.setenv(REQUIRE_TOOLS, value)
    with pytest.raises(pytest.skip.Exception, match=f"no `{ABSENT}`: the test needs it"):
        require_tool(ABSENT, "the test needs it")
    with pytest.raises(pytest.skip.Exception, match="no Python package"):
        require_module("fewstep_no_such_module", "the test needs it")


def test_without_the_variable_a_missing_tool_skips(monkeypatch):
    monkeypatch.delenv(REQUIRE_TOOLS, raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_tool(ABSENT, "reason")


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_a_missing_tool_fails_when_required(monkeypatch, value):
    monkeypatch.setenv(REQUIRE_TOOLS, value)
    with pytest.raises(pytest.fail.Exception, match=f"no `{ABSENT}`: the test needs it.*{REQUIRE_TOOLS}=1"):
        require_tool(ABSENT, "the test needs it")
    with pytest.raises(pytest.fail.Exception, match="fewstep_no_such_module"):
        require_module("fewstep_no_such_module", "the test needs it")


@pytest.mark.parametrize("value", ["0", "1"])
def test_a_present_tool_or_module_is_returned_either_way(monkeypatch, tmp_path, value):
    monkeypatch.setenv(REQUIRE_TOOLS, value)
    tool = tmp_path / "fewstep-fake-tool"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert require_tool(tool.name, "reason") == str(tool)
    assert require_module("json", "reason").__name__ == "json"


def test_a_typo_in_the_switch_is_an_error_not_a_silent_skip(monkeypatch):
    monkeypatch.setenv(REQUIRE_TOOLS, "on-please")
    with pytest.raises(pytest.UsageError, match=REQUIRE_TOOLS):
        require_tool(ABSENT, "reason")


@pytest.mark.parametrize(("value", "outcome"), [("0", "1 skipped"), ("1", "1 error")])
def test_at_a_modules_top_a_missing_package_skips_the_module_or_fails_its_collection(tmp_path, value, outcome):
    """As `pytest.importorskip` at a module's top: the whole module skips, or under the switch does
    not even collect (a real pytest run on a module that requires a package that is not there)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    module = tmp_path / "test_needs_a_package.py"
    module.write_text(
        "from tests.conftest import require_module\n"
        'require_module("fewstep_no_such_module", "the test needs it")\n\n'
        "def test_never_runs():\n    raise AssertionError('ran without its package')\n"
    )
    env = {**os.environ, REQUIRE_TOOLS: value, "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), str(module)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert outcome in proc.stdout, proc.stdout[-2000:]
    assert "ran without its package" not in proc.stdout
