"""The bench package as a whole: every module imports without side effects (nothing printed,
written, parsed, logged or set in the environment), and none doubles as its own script, so that
`fewstep bench` is the one command line (bench.cli alone uses argparse)."""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import bench

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(m.name for m in pkgutil.walk_packages(bench.__path__, "bench."))
FIRST_PARTY = ("bench", "distill", "fewstep", "fewstep_cli", "scripts", "service", "shapesworld")

# Imports each module in turn in a fresh interpreter whose working directory is empty, with
# argparse disarmed, and reports what each import did beyond defining names.
CHILD = r"""
import argparse, contextlib, io, json, logging, os, sys

def refuse(*args, **kwargs):
    raise AssertionError("a command line was parsed")

argparse.ArgumentParser.parse_args = refuse
argparse.ArgumentParser.parse_known_args = refuse
first_party = set(sys.argv[1].split(","))
report = {}
for name in sys.argv[2:]:
    files, env, handlers = sorted(os.listdir(".")), dict(os.environ), list(logging.root.handlers)
    out, err, problems = io.StringIO(), io.StringIO(), []
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            __import__(name)
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in first_party:
            raise
        report[name] = {"skipped": f"needs {e.name}"}  # an optional dependency (LitServe) not installed
        continue
    except BaseException as e:
        problems.append(f"raised {e!r}")
    if out.getvalue():
        problems.append(f"printed {out.getvalue()[:200]!r}")
    if err.getvalue():
        problems.append(f"wrote to stderr {err.getvalue()[:200]!r}")
    if sorted(os.listdir(".")) != files:
        problems.append("wrote files")
    if dict(os.environ) != env:
        problems.append("changed the environment")
    if logging.root.handlers != handlers:
        problems.append("configured logging")
    report[name] = {"problems": problems}
print(json.dumps(report))
"""


def test_every_bench_module_imports_without_side_effects(tmp_path):
    assert {"bench.cli", "bench.cli.compute", "bench.gpu", "bench.sim_server"} <= set(MODULES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("OMP_WAIT_POLICY", None)  # so that setting it at import would show
    r = subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(FIRST_PARTY), *MODULES],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(report) == set(MODULES)
    bad = {name: res["problems"] for name, res in report.items() if res.get("problems")}
    assert not bad, bad
    assert not list(tmp_path.iterdir())


def _runs_as_script(tree: ast.Module) -> bool:
    """A module-level `if __name__ == "__main__":`."""
    return any(
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        for node in tree.body
    )


def _imports_argparse(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "argparse":
            return True
    return False


def test_no_bench_module_is_a_script_and_only_the_cli_parses_flags():
    scripts, parsers = [], []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        tree = ast.parse(path.read_text())
        rel = path.relative_to(ROOT).as_posix()
        if _runs_as_script(tree) or (path.name == "__main__.py"):
            scripts.append(rel)
        if _imports_argparse(tree) and not rel.startswith("bench/cli/"):
            parsers.append(rel)
    assert not scripts, f"run these as `fewstep bench ...` subcommands instead: {scripts}"
    assert not parsers, f"flags belong to bench.cli, the modules take typed configs: {parsers}"
