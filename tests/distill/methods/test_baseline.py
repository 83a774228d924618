"""What the pd and cd baselines share (distill.methods.baseline): the teacher check, the guided teacher,
evaluations counted by role, and one student update with its EMA."""

from __future__ import annotations

import pytest

from tests.conftest import make_packed_model

torch = pytest.importorskip("torch")


def baseline_run(teacher, **overrides):
    from distill.methods.baseline import BaselineRun
    from distill.methods.config import load_distill_config

    class Run(BaselineRun):
        def iteration(self, batches, step):  # the method's part, not under test here
            raise NotImplementedError

    cfg = load_distill_config("tiny", overrides=[f"{k}={v}" for k, v in overrides.items()])
    return Run(cfg, teacher, torch.device("cpu"))


def test_a_student_is_refused_as_the_teacher(tmp_path, tiny_bert_dir):
    from distill.kit.config import ConfigError

    student = make_packed_model(tmp_path / "s", tiny_bert_dir, guidance_input=True)
    with pytest.raises(ConfigError, match="must be a teacher"):
        baseline_run(student)


def test_evaluations_are_counted_by_role_and_the_teachers_guided_pass_counts_twice(teacher):
    run = baseline_run(teacher, guidance_min=2.0, guidance_max=4.0)
    res = run.tcfg.model.resolution
    batch = {"image": torch.zeros(3, 3, res, res), "caption": ["a red circle", "a blue square", "a green cross"]}
    x, cond, w = run.data(batch)
    assert ((w >= 2.0) & (w <= 4.0)).all() and w.unique().numel() == 3
    z, t = torch.randn_like(x), torch.full((3,), 0.5)
    x_t = run.teacher_x(z, t, cond, w)
    x_s = run.net_x(run.student, z, t, cond, w)
    assert x_t.shape == x_s.shape == x.shape
    assert run.evals == {"teacher_forward": 6, "student_forward": 3, "backward": 0}
    # the student starts as the teacher with a zero-initialised guidance input: its prediction
    # is the teacher's conditional one, not the guided one
    assert not torch.allclose(x_s, x_t, atol=1e-4)


def test_an_update_moves_the_student_and_its_ema_and_counts_the_backward_pass(teacher):
    run = baseline_run(teacher, ema_decay=0.5)
    before = [p.detach().clone() for p in run.student.parameters()]
    ema_before = [p.detach().clone() for p in run.ema.parameters()]
    res = run.tcfg.model.resolution
    batch = {"image": torch.zeros(2, 3, res, res), "caption": ["a red circle", "a blue square"]}
    x, cond, w = run.data(batch)
    loss = (run.net_x(run.student, torch.randn_like(x), torch.full((2,), 0.5), cond, w) - 1.0).pow(2).mean()
    norm = run.update(loss, lr=1e-3, images=2)
    assert norm > 0 and run.evals["backward"] == 2
    moved = [not torch.equal(a, b) for a, b in zip(before, run.student.parameters(), strict=True)]
    assert any(moved)
    ema_moved = [not torch.equal(a, b) for a, b in zip(ema_before, run.ema.parameters(), strict=True)]
    assert any(ema_moved) and not any(p.requires_grad for p in run.ema.parameters())
    assert set(run.networks()) == {"student", "ema"}
