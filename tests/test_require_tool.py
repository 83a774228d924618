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
