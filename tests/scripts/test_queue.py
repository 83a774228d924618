"""scripts/queue.sh: the one queue of background runs gives the cores to the long runs until every
one has a row at its budget, the first two unfinished first, and only then to the methods table."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _repo(tmp_path: Path) -> Path:
    """A stand-in repository: the real queue script beside stubs that record how they were called."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "queue.sh", tmp_path / "scripts" / "queue.sh")
    for name in ("long_runs.sh", "methods_table.sh"):
        stub = tmp_path / "scripts" / name
        stub.write_text(f'#!/usr/bin/env bash\necho "{name} ONLY=${{ONLY:-}} BUDGET=${{BUDGET:-}}" >> calls.txt\n')
        stub.chmod(0o755)
    (tmp_path / "results" / "long_runs").mkdir(parents=True)
    return tmp_path


def _queue(repo: Path) -> list[str]:
    env = {"PATH": "/usr/bin:/bin", "LONG_BUDGET": "1000", "LONG_RUNS_SCRIPT": "scripts/long_runs.sh"}
    subprocess.run(["bash", "scripts/queue.sh"], cwd=repo, env=env, check=True, capture_output=True)
    calls = (repo / "calls.txt").read_text().splitlines()
    (repo / "calls.txt").unlink()
    return calls


def test_the_first_two_unfinished_long_runs_go_first(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    assert _queue(repo) == ["long_runs.sh ONLY=mm-alt-k8 pd-k8 BUDGET=1000"]
    # mm-alt-k8 has its row at the budget (a milestone before it does not count): pd-k8 and the next.
    (repo / "results" / "long_runs" / "mm-alt-k8-i500.json").write_text("{}")
    assert _queue(repo) == ["long_runs.sh ONLY=mm-alt-k8 pd-k8 BUDGET=1000"]
    (repo / "results" / "long_runs" / "mm-alt-k8-i1000.json").write_text("{}")
    assert _queue(repo) == ["long_runs.sh ONLY=pd-k8 mm-alt-k4 BUDGET=1000"]


def test_the_methods_table_runs_only_when_every_long_run_is_done(tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    for name in ("mm-alt-k8", "pd-k8", "mm-alt-k4"):
        (repo / "results" / "long_runs" / f"{name}-i1000.json").write_text("{}")
    assert _queue(repo) == ["long_runs.sh ONLY=cd-k4 BUDGET=1000"]
    (repo / "results" / "long_runs" / "cd-k4-i1000.json").write_text("{}")
    assert _queue(repo) == ["methods_table.sh ONLY= BUDGET="]
