"""The documentation site builds in strict mode, and its figure hook fails on a plot that is not there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

mkdocs = pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("material", reason="the docs extra is not installed (pip install -e '.[docs]')")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"},
    )


def test_the_site_builds_strict(tmp_path: Path) -> None:
    done = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    assert (site / "results" / "distillation" / "index.html").is_file()
    # the hook served the plots the pages name, from results/
    served = (site / "figures" / "distill_fd_steps.png").read_bytes()
    assert served == (ROOT / "results/distill_fd_steps.png").read_bytes()


def test_a_missing_figure_fails_the_build(tmp_path: Path) -> None:
    project = tmp_path / "p"
    (project / "docs" / "hooks").mkdir(parents=True)
    (project / "results").mkdir()
    shutil.copy(ROOT / "docs/hooks/figures.py", project / "docs/hooks/figures.py")
    (project / "results" / "there.png").write_bytes((ROOT / "results/distill_fd_steps.png").read_bytes())
    (project / "mkdocs.yml").write_text(
        "site_name: t\nhooks:\n  - docs/hooks/figures.py\nexclude_docs: |\n  hooks/\nnav:\n  - index.md\n"
    )
    (project / "docs" / "index.md").write_text("# t\n\n![a](figures/there.png)\n")
    assert _build(project / "mkdocs.yml", tmp_path / "s1").returncode == 0
    (project / "docs" / "index.md").write_text("# t\n\n![a](figures/there.png)\n![b](figures/gone.png)\n")
    failed = _build(project / "mkdocs.yml", tmp_path / "s2")
    assert failed.returncode != 0 and "gone.png" in failed.stderr
