"""The students the project ships are the distillation table's winners (`distill.reports.winners`): the
committed decision (the Makefile's WINNERS, which `make students` ships from), the committed weights,
the Makefile's STUDENTS and DEFAULT_MODEL and the Dockerfile's build arguments all name the same
models."""

from __future__ import annotations

import json
import re

import pytest

from fewstep.bundle import sha256_file
from tests.defaults import ROOT, default_model


def _winners_path():
    found = re.search(r"^WINNERS \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert found, "Makefile: no WINNERS (the decision `make students` ships from)"
    return ROOT / found.group(1)


@pytest.fixture()
def decision() -> dict:
    path = _winners_path()
    assert path.is_file(), f"{path.relative_to(ROOT)} is not committed (written by `fewstep eval distill-table`)"
    return json.loads(path.read_text())


def test_the_committed_students_are_the_weights_the_table_measured(decision):
    for s in decision["students"]:
        weights = ROOT / "models" / "students" / s["name"] / "model.safetensors"
        assert weights.is_file(), f"{s['name']}: not shipped (make students)"
        assert sha256_file(weights) == s["model_sha256"], f"{s['name']}: not the weights the table measured"
        info = json.loads((weights.parent / "config.json").read_text())["student"]
        assert f"{info['method']}-k{info['steps']}" == s["name"]


def test_the_makefile_and_the_images_serve_the_winners(decision):
    make = (ROOT / "Makefile").read_text()
    students = re.search(r"^STUDENTS := (.+)$", make, re.M)
    assert students, "Makefile: no STUDENTS list"
    assert sorted(students.group(1).split()) == sorted(s["name"] for s in decision["students"])
    if decision["default"] is not None:
        assert default_model() == decision["default"], "Makefile DEFAULT_MODEL is not the decided default"
