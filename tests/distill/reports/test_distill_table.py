"""`fewstep eval distill-table`: the rows it plans, the files it writes, and the reuse of rows whose
weights and settings have not changed."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import make_packed_model

EVALUATOR = "models/evaluator"
RES32 = ("model.resolution=32", "data.resolution=32", "model.cross_attn_resolutions=[16]")


@pytest.fixture()
def models(tmp_path, tiny_bert_dir):
    teacher = make_packed_model(tmp_path / "teacher", tiny_bert_dir, overrides=RES32)
    student = make_packed_model(
        tmp_path / "students" / "s", tiny_bert_dir, guidance_input=True, seed=1, overrides=RES32
    )
    info = json.loads((student / "config.json").read_text())
    info["student"] = {
        "method": "mm-alt",
        "steps": 2,
        "sampler": "ancestral",
        "guidance": [1.0, 2.0, 3.0],
        "training": {"iters": 3, "wall_s": 6.0, "device": "cpu", "network_forward_images": 120},
    }
    (student / "config.json").write_text(json.dumps(info))
    return teacher, student


@pytest.mark.slow  # tens of seconds of export or training: `make test-slow`
def test_the_table_is_written_and_unchanged_rows_are_reused(models, tmp_path, monkeypatch):
    import distill.evaluation.evaluate as evaluate
    import distill.reports.distill_table as report

    teacher, student = models
    # The contest is among students distilled at the table's w (a conditioned one ships, it does not
    # compete): here both are fixed at w = 2.
    info = json.loads((student / "config.json").read_text())
    info["student"]["guidance"] = [2.0, 2.0, 2.0]
    (student / "config.json").write_text(json.dumps(info))
    # A second method at the same K: the table compares it with mm-alt, pairwise.
    pd = tmp_path / "students" / "pd"
    shutil.copytree(student, pd)
    info = json.loads((pd / "config.json").read_text())
    info["student"]["method"] = "pd"
    (pd / "config.json").write_text(json.dumps(info))
    weights = load_file(pd / "model.safetensors")
    save_file({k: v + 0.05 * torch.randn_like(v) for k, v in weights.items()}, pd / "model.safetensors")
    calls = []
    real = evaluate.evaluate

    def counting(model, sampler, steps, *args, **kwargs):
        calls.append((str(model), sampler, steps))
        return real(model, sampler, steps, *args, **kwargs)

    monkeypatch.setattr(report, "evaluate", counting)
    monkeypatch.setattr(evaluate, "evaluate", counting)  # the ceiling, through `evaluate_once`
    out = tmp_path / "results"

    def table(**kw):
        return report.distill_table([student, pd], str(teacher), 2.0, 6, out, ("ancestral", 4), progress=False, **kw)

    rows = table()
    # Each student at its K, the teacher at its best setting, and DDIM and DPM-Solver++ at the students' K.
    assert sorted((c[1], c[2]) for c in calls) == [
        ("ancestral", 2), ("ancestral", 2), ("ancestral", 4), ("ddim", 2), ("dpmpp-2m", 2),
    ]  # fmt: skip
    # The teacher's best row is the shared ceiling, kept where `fewstep eval ceiling` keeps it.
    assert (out / "ceiling" / "teacher-ancestral-4-w2-n6.json").is_file()
    assert not (out / "distill" / "teacher-ancestral-4.json").exists()
    # Paired: each student against the ceiling, and mm-alt against pd at K = 2.
    assert sorted(p.stem for p in (out / "distill" / "paired").glob("*.json")) == [
        "ceiling-vs-mm-alt-k2", "ceiling-vs-pd-k2", "pd-k2-vs-mm-alt-k2",
    ]  # fmt: skip
    pair = json.loads((out / "distill" / "paired" / "pd-k2-vs-mm-alt-k2.json").read_text())
    by_label = {r["label"]: r for r in rows}
    assert pair["fd"]["diff"] == pytest.approx(by_label["mm-alt"]["fd"] - by_label["pd"]["fd"], rel=1e-3)
    text = (out / "distill.md").read_text()
    assert "## Paired differences" in text and "| 2 | mm-alt | pd |" in text
    assert f"also under `{(out / 'distill' / 'paired').as_posix()}/`" in text  # where this table's pairs are
    assert text.count("\n| ") == (2 + 5) + (2 + 3) + (2 + 2)  # header, rule, rows; paired; winners
    assert "3 updates, 0.1 min on cpu" in text
    assert all(len(r["model_sha256"]) == 64 for r in rows)
    assert (out / "distill_fd_steps.png").is_file() and (out / "distill_grid.png").is_file()

    # Which student ships at K = 2: decided from the same pairs (no new comparison was needed); no
    # default model without the teacher's served row.
    decision = json.loads((out / "distill_winners.json").read_text())
    assert decision["per_k"]["2"]["winner"] in ("mm-alt-k2", "pd-k2") and decision["default"] is None
    assert "## Winners and the default model" in text

    calls.clear()
    (out / "teacher").mkdir()
    (out / "teacher" / "ancestral-16.json").write_text(json.dumps({"guidance": 2.0, "adherence": {"one_object": 0.0}}))
    again = table()
    assert calls == [] and [r["fd"] for r in again] == [r["fd"] for r in rows]
    decision = json.loads((out / "distill_winners.json").read_text())
    assert decision["default"] == decision["per_k"]["2"]["winner"]  # the one K's winner, above a floor of -0.05

    weights = load_file(student / "model.safetensors")
    save_file({k: v + 0.01 * torch.randn_like(v) for k, v in weights.items()}, student / "model.safetensors")
    table()
    assert calls == [(str(student), "ancestral", 2)]  # only the row whose weights changed

    calls.clear()
    table(reuse=False)
    assert len(calls) == 5


@pytest.mark.slow  # about 70 s alone: it samples both models at every w (the default suite stays under 15 minutes)
def test_the_guidance_sweep_compares_the_student_and_the_teacher_at_each_w(models, tmp_path):
    from distill.reports.distill_table import guidance_compare

    teacher, student = models
    out = tmp_path / "results"
    rows = guidance_compare(student, str(teacher), (1.0, 3.0), (4,), 6, out, progress=False)
    assert [(r["label"], r["guidance"]) for r in rows] == [
        ("mm-alt K=2", 1.0), ("teacher ancestral 4", 1.0), ("mm-alt K=2", 3.0), ("teacher ancestral 4", 3.0),
    ]  # fmt: skip
    # One evaluation per step for the student at any w; the teacher doubles its batch for w != 1.
    assert [r["nfe"] for r in rows] == [2, 4, 2, 8]
    text = (out / "distill_guidance.md").read_text()
    assert "w in [1.0, 3.0]" in text and text.count("\n| ") == 2 + 4
    assert sorted(p.name for p in (out / "distill_guidance").glob("*.json")) == [
        "mm-alt-k2-w1.json", "mm-alt-k2-w3.json", "teacher-ancestral-4-w1.json", "teacher-ancestral-4-w3.json",
    ]  # fmt: skip


def test_a_runs_raw_weights_are_their_own_row_beside_its_ema(tmp_path):
    """`student/` is a run's EMA and `student-raw/` its raw weights: two rows, never one name."""
    from distill.reports.distill_table import plan_rows

    run = tmp_path / "runs" / "mm-alt-k8"
    for d in ("student", "student-raw"):
        (run / d).mkdir(parents=True)
        (run / d / "config.json").write_text(json.dumps({"student": {"method": "mm-alt", "steps": 8}}))
    plan = plan_rows([run / "student", run / "student-raw"], "teacher", 3.0, ("ancestral", 64))
    students = [(p["label"], p["name"]) for p in plan if not p["label"].startswith("teacher")]
    assert students == [("mm-alt", "mm-alt-k8"), ("mm-alt (raw)", "mm-alt-k8-raw")]


def test_a_guidance_conditioned_student_is_its_own_row_beside_the_fixed_w_one(tmp_path):
    """Two runs of one method and K, one at w = 3 and one conditioned on w in [1, 5]: two rows."""
    from distill.reports.distill_table import plan_rows

    for name, g in (("mm-alt-k8", [3, 3, 3]), ("mm-alt-wc-k8", [1, 3, 5])):
        (tmp_path / name / "student").mkdir(parents=True)
        cfg = {"student": {"method": "mm-alt", "steps": 8, "guidance": g}}
        (tmp_path / name / "student" / "config.json").write_text(json.dumps(cfg))
    plan = plan_rows([tmp_path / n / "student" for n in ("mm-alt-k8", "mm-alt-wc-k8")], "t", 3.0, ("ancestral", 64))
    students = [(p["label"], p["name"], p["method"], p["conditioned"]) for p in plan if "method" in p]
    assert students == [("mm-alt", "mm-alt-k8", "mm-alt", False), ("mm-alt (w 1-5)", "mm-alt-wc-k8", "mm-alt", True)]
