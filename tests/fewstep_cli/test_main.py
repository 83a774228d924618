"""The command-line root: the console script's target, every package's subcommands gathered, and
config and data errors reported in one line (exit status 2) unless -v asks for the traceback."""

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from fewstep_cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("distill", "tune", "export", "data", "train", "pack", "eval", "serve", "generate", "build-engines", "bench")


def test_the_console_script_runs_this_main():
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["fewstep"]
    assert target == "fewstep_cli.main:main"


def test_every_package_registers_its_subcommands():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_python_m_runs_the_same_command():
    r = subprocess.run([sys.executable, "-m", "fewstep_cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith("usage: fewstep")
    assert all(c in r.stdout for c in COMMANDS)


def test_value_errors_are_one_line_with_status_2(capsys):
    assert main(["eval"]) == 2
    err = capsys.readouterr().err
    assert err == "fewstep eval: error: --model is required (or use `fewstep eval train-evaluator`)\n"


def test_verbose_shows_the_traceback():
    with pytest.raises(ValueError, match="--model is required"):
        main(["-v", "eval"])
