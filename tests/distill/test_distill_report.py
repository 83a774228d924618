"""`fewstep eval distill-table`: the rows it plans, the files it writes, and the reuse of rows whose
weights and settings have not changed."""

import json

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


def test_the_table_is_written_and_unchanged_rows_are_reused(models, tmp_path, monkeypatch):
    import distill.distill_report as report

    teacher, student = models
    calls = []
    real = report.evaluate

    def counting(model, sampler, steps, *args, **kwargs):
        calls.append((str(model), sampler, steps))
        return real(model, sampler, steps, *args, **kwargs)

    monkeypatch.setattr(report, "evaluate", counting)
    out = tmp_path / "results"

    def table(**kw):
        return report.distill_table([student], str(teacher), 2.0, 6, out, ("ancestral", 4), progress=False, **kw)

    rows = table()
    # The student at its K, the teacher at its best setting, and DDIM and DPM-Solver++ at the student's K.
    assert sorted((c[1], c[2]) for c in calls) == [("ancestral", 2), ("ancestral", 4), ("ddim", 2), ("dpmpp-2m", 2)]
    text = (out / "distill.md").read_text()
    assert text.count("\n| ") == 2 + 4  # header, rule, rows and "3 updates, 0.1 min on cpu" in text
    assert all(len(r["model_sha256"]) == 64 for r in rows)
    assert (out / "distill_fd_steps.png").is_file() and (out / "distill_grid.png").is_file()

    calls.clear()
    again = table()
    assert calls == [] and [r["fd"] for r in again] == [r["fd"] for r in rows]

    weights = load_file(student / "model.safetensors")
    save_file({k: v + 0.01 * torch.randn_like(v) for k, v in weights.items()}, student / "model.safetensors")
    table()
    assert calls == [(str(student), "ancestral", 2)]  # only the row whose weights changed

    calls.clear()
    table(reuse=False)
    assert len(calls) == 4
