"""Provenance: a results file names the commit behind it, and says `-dirty` when the tree had changes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fewstep.provenance import UNKNOWN, git_revision, is_dirty, provenance

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    _git(tmp_path, "add", "code.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    return tmp_path


def test_clean_tree_gives_the_bare_commit(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    assert git_revision(repo) == head
    assert provenance(repo) == {"git_sha": head, "dirty": False}


def test_a_changed_tracked_file_is_said(repo: Path) -> None:
    head = _git(repo, "rev-parse", "HEAD")
    (repo / "code.py").write_text("x = 2\n")
    assert git_revision(repo) == head + "-dirty"
    assert provenance(repo) == {"git_sha": head + "-dirty", "dirty": True}


def test_untracked_outputs_do_not_make_a_tree_dirty(repo: Path) -> None:
    (repo / "results.json").write_text("{}")
    assert not is_dirty(git_revision(repo))


def test_outside_a_repository_is_unknown(tmp_path: Path) -> None:
    assert git_revision(tmp_path) == UNKNOWN
    assert provenance(tmp_path)["dirty"] is False


def test_the_writers_of_results_record_it(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundle manifests, evaluation rows, training runs and the benchmarks' machine record all say dirty."""
    pytest.importorskip("torch")
    from bench.sampler import machine_info
    from bench.server import machine
    from distill.evaluation.evaluate import git_sha as eval_git_sha
    from distill.export.bundle import git_sha as bundle_git_sha
    from distill.kit.runinfo import git_revision as run_git_revision

    (repo / "code.py").write_text("x = 3\n")
    monkeypatch.chdir(repo)
    expected = _git(repo, "rev-parse", "HEAD") + "-dirty"
    assert bundle_git_sha() == expected
    assert eval_git_sha() == expected
    assert run_git_revision() == expected
    for record in (machine(), machine_info()):
        assert record["git_sha"] == expected and record["dirty"] is True
