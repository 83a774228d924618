"""`fewstep export --evaluation`: the rows a bundle records must be the exported weights' own."""

import json
from pathlib import Path

import pytest

from distill.cli.export import _evaluation_rows
from distill.kit.checkpoint import weights_file
from fewstep.bundle import sha256_file

TEACHER = Path(__file__).resolve().parents[3] / "models" / "teacher"


def _row(tmp_path: Path, name: str, **extra) -> str:
    row = {"sampler": "ancestral", "steps": 16, "guidance": 3.0, "fd": 400.0, "fd_ci": [380.0, 420.0],
           "eval_set_version": 2, "not_recorded": 1, **extra}  # fmt: skip
    path = tmp_path / name
    path.write_text(json.dumps(row))
    return str(path)


def test_a_row_of_the_same_weights_is_recorded_with_its_interval_and_set_version(tmp_path):
    sha = sha256_file(weights_file(TEACHER)[0])
    rows = _evaluation_rows([_row(tmp_path, "a.json", model_sha256=sha)], TEACHER)
    assert list(rows) == ["ancestral-16-w3"]
    row = rows["ancestral-16-w3"]
    assert row["fd_ci"] == [380.0, 420.0] and row["eval_set_version"] == 2 and "not_recorded" not in row


def test_a_row_of_other_weights_is_refused_naming_the_file(tmp_path):
    stale = _row(tmp_path, "stale.json", model_sha256="0" * 64)
    with pytest.raises(SystemExit, match=r"stale\.json"):
        _evaluation_rows([stale], TEACHER)
