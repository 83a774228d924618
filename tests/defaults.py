"""The project's default model and students, named once: the Makefile's `DEFAULT_MODEL` (what `make serve` and
`make example` use; the Dockerfile's `FEWSTEP_DEFAULT_MODEL` must match it)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def default_model() -> str:
    found = re.search(r"^DEFAULT_MODEL \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    if not found:
        raise AssertionError("Makefile: no `DEFAULT_MODEL ?= NAME` line")
    return found.group(1)


def students() -> list[str]:
    """The Makefile's STUDENTS: the committed default students (the distillation table's winners)."""
    found = re.search(r"^STUDENTS := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    if not found:
        raise AssertionError("Makefile: no `STUDENTS := NAME ...` line")
    return found.group(1).split()


def student(k: int) -> str:
    """The default student with K steps (its name ends in -k<K>)."""
    named = [s for s in students() if s.endswith(f"-k{k}")]
    if len(named) != 1:
        raise AssertionError(f"Makefile STUDENTS {students()}: not exactly one {k}-step student")
    return named[0]
