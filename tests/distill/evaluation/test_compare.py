"""`fewstep eval compare`: paired differences with intervals, from sidecars, and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distill.evaluation.compare import Side, compare, load_side, paired
from fewstep_cli.main import main
from tests.distill.evaluation.test_per_image import make_items, make_record


def _row_files(tmp_path, name, rec, guidance=3.0):
    rec.save(tmp_path / f"{name}.npz")
    row = {"name": name, "model": f"models/{name}", "sampler": "ancestral", "steps": 8, "guidance": guidance,
           "n_images": rec.n, "per_image": f"{name}.npz"}  # fmt: skip
    (tmp_path / f"{name}.json").write_text(json.dumps(row))
    return tmp_path / f"{name}.json"


def test_a_model_against_itself_differs_by_exactly_zero():
    rec = make_record(make_items(60), noise=3.0, drop=0.2)
    out = paired(rec, rec, resamples=50)
    assert out["fd"]["diff"] == 0.0 and out["fd"]["ci"] == [0.0, 0.0]
    assert out["adherence"]["overall"]["diff"] == 0.0 and out["adherence"]["overall"]["ci"] == [0.0, 0.0]
    assert out["grain"]["ci"] == [0.0, 0.0]


def test_a_worse_model_shows_a_difference_whose_interval_excludes_zero():
    items = make_items(120)
    a = make_record(items, seed=0, noise=1.0, drop=0.0)
    b = make_record(items, seed=1, noise=8.0, drop=0.5)
    out = paired(a, b, resamples=200)
    adh = out["adherence"]["overall"]
    assert adh["a"] == 1.0 and adh["diff"] < -0.3 and adh["ci"][1] < 0
    assert out["adherence"]["per_attribute"]["background"]["diff"] == 0.0  # the background always held
    assert out["grain"]["diff"] > 3 and out["grain"]["ci"][0] > 0
    assert out["fd"]["diff"] > 0 and out["fd"]["ci"][0] < out["fd"]["diff"] < out["fd"]["ci"][1]
    assert out["adherence"]["two_objects_per_attribute"]["count"]["diff"] < 0


def test_compare_writes_json_and_a_markdown_table(tmp_path):
    items = make_items(60)
    a = Side("A", {"model": "a", "sampler": "ancestral", "steps": 8, "guidance": 3.0}, make_record(items, seed=0))
    b = Side("B", {"model": "b", "sampler": "ddim", "steps": 4, "guidance": 3.0}, make_record(items, seed=1, drop=0.5))
    result = compare(a, b, tmp_path, resamples=50)
    saved = json.loads((tmp_path / "A-vs-B.json").read_text())
    assert saved["fd"]["diff"] == pytest.approx(result["fd"]["diff"]) and saved["n_images"] == 60
    md = (tmp_path / "A-vs-B.md").read_text()
    assert "| adherence overall |" in md and "| FD |" in md and "*" in md  # a significant drop is marked
    assert md.count("\n| ") >= 2 + 3 + 5 + 12


def test_cli_compares_two_rows_from_their_sidecars(tmp_path):
    items = make_items(60)
    fa = _row_files(tmp_path, "a", make_record(items, seed=0))
    fb = _row_files(tmp_path, "b", make_record(items, seed=1, drop=0.4))
    out = tmp_path / "cmp"
    argv = ["eval", "compare", str(fa), str(fb), "--out-dir", str(out), "--resamples", "50"]
    assert main(argv) == 0
    result = json.loads((out / "a-vs-b.json").read_text())
    assert result["a"]["label"] == "a" and result["adherence"]["overall"]["diff"] < 0
    # A sidecar works as well as its row.
    assert main([*argv[:2], str(tmp_path / "a.npz"), str(fb), *argv[4:], "--name", "x"]) == 0
    assert (out / "x.md").is_file()


def test_compare_refuses_rows_of_other_prompts_or_without_sidecars(tmp_path, capsys):
    fa = _row_files(tmp_path, "a", make_record(make_items(60), seed=0))
    fb = _row_files(tmp_path, "b", make_record(make_items(48), seed=1))
    assert main(["eval", "compare", str(fa), str(fb), "--out-dir", str(tmp_path)]) == 2
    assert "A has 60 images and B 48: a paired comparison needs the same prompt set" in capsys.readouterr().err
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"name": "old", "fd": 1.0}))
    with pytest.raises(ValueError, match="no per-image sidecar"):
        load_side(old)
    with pytest.raises(FileNotFoundError, match="not a model directory"):
        load_side(tmp_path / "nothing")


def test_a_model_directory_is_evaluated_once_and_then_reused(tmp_path, monkeypatch):
    """Model directories go through `evaluate_once`: a teacher at its ceiling, a student at its own K."""
    import distill.evaluation.evaluate as ev

    items = make_items(30)
    calls = []

    def fake_evaluate(model, sampler, steps, guidance, n_images, name, out_dir, **kw):
        calls.append((str(model), sampler, steps, guidance))
        rec = make_record(items, seed=len(calls))
        rec.save(out_dir / f"{name}.npz")
        row = {"name": name, "model": str(model), "sampler": sampler, "steps": steps, "guidance": guidance,
               "n_images": n_images, "per_image": f"{name}.npz"}  # fmt: skip
        (out_dir / f"{name}.json").write_text(json.dumps(row))
        return row

    monkeypatch.setattr(ev, "evaluate", lambda *a, **kw: fake_evaluate(*a, **kw))
    monkeypatch.setattr(ev, "reusable", lambda f, *a, **kw: json.loads(f.read_text()) if f.is_file() else None)
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    teacher.mkdir()
    student.mkdir()
    (student / "config.json").write_text(json.dumps({"student": {"steps": 4, "sampler": "ddim", "method": "pd"}}))
    kw = {"guidance": 2.0, "n_images": 30, "rows_dir": tmp_path / "rows", "ceiling_dir": tmp_path / "ceil"}
    (tmp_path / "rows").mkdir()
    (tmp_path / "ceil").mkdir()
    t = load_side(teacher, **kw)
    s = load_side(student, **kw)
    assert calls == [(str(teacher), "ancestral", 64, 2.0), (str(student), "ddim", 4, 2.0)]
    assert t.label == "teacher-ancestral-64-w2-n30" and (tmp_path / "ceil" / f"{t.label}.npz").is_file()
    assert s.label == "student-ddim-4-w2-n30"
    load_side(teacher, **kw)
    assert len(calls) == 2  # reused
    assert np.array_equal(t.per_image.captions, s.per_image.captions)


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["eval", "--help"], "compare"),
        (["eval", "compare", "--help"], "sidecar"),
        (["eval", "ceiling", "--help"], "--guidance"),
    ],
)
def test_eval_help_lists_compare_and_ceiling(argv, shown, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0 and shown in capsys.readouterr().out
