"""Progressive distillation (Salimans and Ho 2022): the two-step DDIM target, its zero-loss fixed
point, the stage schedule, and a tiny end-to-end run through `fewstep distill` with exact resume."""

import json

import numpy as np
import pytest
import torch

from distill.kit.config import ConfigError
from distill.methods.config import load_distill_config
from distill.methods.progressive import pd_loss, stage_at, stage_lengths, stage_steps, two_step_target
from distill.methods.registry import distill
from distill.methods.runloop import RunOptions
from fewstep.sampler import ddim_sample, ddim_step
from fewstep.schedule import step_plan
from tests.distill.methods.conftest import assert_ddim_student_samples, assert_resumed_exactly


def toy_teacher(z, t, cond, w):
    """A smooth, non-linear x-prediction that depends on z, t and w (a stand-in teacher)."""
    tt = t.view(-1, 1, 1, 1)
    return 0.8 * torch.tanh(z * (1.5 - tt)) + 0.1 * tt * torch.as_tensor(w).view(-1, 1, 1, 1)


class Noise:
    def __init__(self, z):
        self.z = z

    def initial(self):
        return self.z

    def step(self, j):
        raise AssertionError("DDIM draws no noise")


class Recorder:
    """The teacher, recording the z it is called at (the states of the DDIM trajectory)."""

    def __init__(self):
        self.zs = []

    def __call__(self, z, t, cond, w):
        self.zs.append(z.clone())
        return toy_teacher(z, t, cond, w)


def _z1(b=3, seed=0):
    return torch.randn(b, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_one_student_step_with_x_tilde_lands_where_two_teacher_ddim_steps_land(n):
    w = torch.tensor([1.0, 2.5, 4.0], dtype=torch.float64)
    rec = Recorder()
    x_last = ddim_sample(rec, 2 * n, None, w, Noise(_z1()))  # the teacher's real 2n-step DDIM trajectory
    zs = rec.zs
    student = step_plan(n)
    for i in range(n):
        z_t = zs[2 * i]
        x_tilde = two_step_target(toy_teacher, z_t, np.full(3, i), n, None, w)
        coeffs = (student.alpha_t[i], student.sigma_t[i], student.alpha_s[i], student.sigma_s[i])
        landed = ddim_step(z_t, x_tilde, *coeffs)
        if i < n - 1:
            expected = zs[2 * i + 2]
        else:  # the sampler stops at x_hat; take its last DDIM step to t = 0 explicitly
            teacher = step_plan(2 * n)
            j = 2 * n - 1
            coeffs = (teacher.alpha_t[j], teacher.sigma_t[j], teacher.alpha_s[j], teacher.sigma_s[j])
            expected = ddim_step(zs[j], x_last, *coeffs)
        torch.testing.assert_close(landed, expected, rtol=1e-9, atol=1e-9)


def test_mixed_student_steps_in_one_batch_match_per_step_targets():
    z = _z1(4, seed=1)
    w = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    i = np.array([0, 3, 1, 2])
    mixed = two_step_target(toy_teacher, z, i, 4, None, w)
    for b in range(4):
        one = two_step_target(toy_teacher, z[b : b + 1], i[b : b + 1], 4, None, w[b : b + 1])
        torch.testing.assert_close(mixed[b : b + 1], one)


def test_a_student_that_matches_its_teachers_four_ddim_steps_gets_zero_loss():
    n = 2

    def student(z, t, cond, w):  # exactly two teacher DDIM steps per step: the optimum of stage 4 -> 2
        i = np.rint((1.0 - t.double().numpy()) * n).astype(int)
        return two_step_target(toy_teacher, z, i, n, cond, w)

    w = torch.tensor([1.0, 3.0, 5.0], dtype=torch.float64)
    for i in range(n):
        plan = step_plan(n)
        t = np.full(3, plan.t[i])
        x = 0.5 * _z1(seed=2)
        z_t = plan.alpha_t[i] * x + plan.sigma_t[i] * _z1(seed=3)
        target = two_step_target(toy_teacher, z_t, np.full(3, i), n, None, w)
        x_hat = student(z_t, torch.as_tensor(t), None, w)
        assert pd_loss(x_hat, target, t).item() < 1e-20
        assert pd_loss(x_hat + 0.01, target, t).item() > 1e-5
    # and its 2-step DDIM sample is the teacher's 4-step one (up to sigma_0 ~ 5e-4 of the end point)
    z1 = _z1(seed=4)
    torch.testing.assert_close(
        ddim_sample(student, 2, None, w, Noise(z1)), ddim_sample(toy_teacher, 4, None, w, Noise(z1)), atol=3e-3, rtol=0
    )


def test_stage_schedule():
    assert stage_steps(2, 8) == [4, 2]
    assert stage_steps(8, 64) == [32, 16, 8]
    assert stage_steps(1, 2) == [1]
    for bad in (48, 8, 4):
        with pytest.raises(ConfigError):
            stage_steps(8, bad)
    assert stage_lengths(4, 3) == [2, 1, 1] and stage_lengths(9, 3) == [3, 3, 3]
    assert [stage_at(s, [2, 1, 1]) for s in range(4)] == [(0, 0), (0, 1), (1, 0), (2, 0)]
    with pytest.raises(ConfigError, match="teacher_steps"):
        load_distill_config("tiny", None, ["method=pd", "steps=4", "teacher_steps=24"])


def test_fewstep_distill_pd_tiny_writes_a_ddim_student_that_samples(teacher, tmp_path):
    from fewstep_cli.main import main

    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(teacher), "--method", "pd", "--steps", "2", "--preset", "tiny"]
    assert main([*argv, "--set", "teacher_steps=8", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["iters"] == 4 and summary["sampler"] == "ddim"
    s0, s1 = summary["stages"]
    assert (s0["teacher_steps"], s0["student_steps"], s1["teacher_steps"], s1["student_steps"]) == (8, 4, 4, 2)
    # batch 4, 2 updates a stage: stage 0 two guided teacher passes (4 images each), stage 1 two student passes
    assert (s0["teacher_forward"], s0["stage_teacher_forward"]) == (2 * 4 * 4, 0)
    assert (s1["teacher_forward"], s1["stage_teacher_forward"]) == (0, 2 * 4 * 2)
    assert summary["network_forward_images"] == 32 + 16 + 4 * 4 and summary["network_backward_images"] == 16
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    assert [r["student_steps"] for r in rows] == [4, 2]
    assert_ddim_student_samples(out / "student", "pd", 2)
    assert (out / "samples" / "step000004.png").is_file() and (out / "student" / "samples.png").is_file()


def test_an_interrupted_pd_run_resumes_exactly_across_a_stage_boundary(teacher, tmp_path):
    cfg = load_distill_config(
        "tiny", None, ["method=pd", "steps=2", "teacher_steps=8", "ckpt_every=1", "ema_decay=0.5"]
    )
    distill(cfg, teacher, tmp_path / "a", RunOptions(progress=False))
    for stop in (2, 3):  # at the boundary (stage 1 not yet begun), then inside stage 1
        distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False, stop_at=stop))
        assert not (tmp_path / "b" / "student").exists()
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False))
    assert_resumed_exactly(tmp_path / "a", tmp_path / "b")
    sa, sb = (json.loads((tmp_path / r / "summary.json").read_text()) for r in "ab")
    assert sa["stages"] == sb["stages"] and sa["evals"] == sb["evals"]
    with pytest.raises(ConfigError, match="iters"):
        distill(cfg.model_copy(update={"iters": 6}), teacher, tmp_path / "b", RunOptions(progress=False))
