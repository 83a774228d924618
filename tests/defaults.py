"""The project's default model, named once: the Makefile's `DEFAULT_MODEL` (what `make serve` and
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
