"""Which code produced a result: the git commit, marked `-dirty` when the working tree had changes.

Every results file (evaluation rows, bundle manifests, benchmark JSON) records this, so a figure
can be traced to the code behind it. A tree with uncommitted changes to tracked files is said, not
hidden: the commit alone would then claim code that did not produce the figure. Untracked files do
not count (run outputs and caches live beside the code). Standard library only, so the service
side and the benchmarks can record it without torch.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

DIRTY_SUFFIX = "-dirty"
UNKNOWN = "unknown"


def git_revision(cwd: str | Path | None = None) -> str:
    """`<sha>` of HEAD, `<sha>-dirty` when tracked files differ from it, `unknown` outside a repository."""
    try:
        sha = _git(["rev-parse", "HEAD"], cwd)
        changes = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    except (OSError, subprocess.SubprocessError):  # no git, not a repository, or git hung
        return UNKNOWN
    return sha + (DIRTY_SUFFIX if changes else "")


def is_dirty(revision: str) -> bool:
    """Whether a recorded revision says its working tree had uncommitted changes."""
    return revision.endswith(DIRTY_SUFFIX)


def provenance(cwd: str | Path | None = None) -> dict[str, str | bool]:
    """`{"git_sha": ..., "dirty": ...}`: the revision and, spelled out, whether it was dirty."""
    revision = git_revision(cwd)
    return {"git_sha": revision, "dirty": is_dirty(revision)}


def _git(args: list[str], cwd: str | Path | None) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, cwd=cwd, timeout=30
    ).stdout.strip()
