"""Multistep consistency distillation (Song et al. 2023; Heek et al. 2024): the target at and
between segment boundaries, the exact consistency function as the loss's fixed point, the loss as a
distance at the boundary, and a tiny end-to-end run through `fewstep distill` with exact resume."""

import json

import numpy as np
import pytest
import torch

from distill.kit.config import ConfigError
from distill.methods.config import load_distill_config
from distill.methods.consistency import cd_loss, consistency_target, segment_boundary
from distill.methods.registry import distill
from distill.methods.runloop import RunOptions
from fewstep.sampler import ddim_sample, ddim_step, ddim_x_for
from fewstep.schedule import alpha_sigma, step_plan, time_grid
from tests.distill.methods.conftest import assert_ddim_student_samples, assert_resumed_exactly
from tests.distill.methods.test_progressive import Noise, toy_teacher


def _z(b=3, seed=0):
    return torch.randn(b, 3, 8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


W = torch.tensor([1.0, 2.5, 4.0], dtype=torch.float64)


def _coeffs(plan, j):
    return plan.alpha_t[j], plan.sigma_t[j], plan.alpha_s[j], plan.sigma_s[j]


def exact_consistency(k, n_total):
    """The exact consistency function of the teacher's N-step DDIM, as an x-prediction: run the
    teacher's DDIM from t down to the segment boundary, then invert one DDIM jump t -> t_b."""
    plan, grid = step_plan(n_total), time_grid(n_total)

    def f(z, t, cond, w):
        j = int(np.rint((1.0 - float(t[0])) * n_total))
        if j == n_total:  # t = 0, queried (and then discarded) on the last boundary
            return z
        b = int(segment_boundary(np.array([j]), k, n_total)[0])
        z_t, zz = z, z
        for m in range(j, b):
            zz = ddim_step(zz, toy_teacher(zz, torch.full_like(t, plan.t[m]), cond, w), *_coeffs(plan, m))
        ab, sb = alpha_sigma(grid[b])
        return ddim_x_for(z_t, zz, plan.alpha_t[j], plan.sigma_t[j], float(ab), float(sb))

    return f


def test_segment_boundaries():
    assert segment_boundary(np.arange(8), 2, 8).tolist() == [4, 4, 4, 4, 8, 8, 8, 8]
    assert segment_boundary(np.arange(4), 4, 4).tolist() == [1, 2, 3, 4]
    with pytest.raises(ConfigError):
        segment_boundary(np.arange(3), 4, 6)
    with pytest.raises(ConfigError, match="teacher_steps"):
        load_distill_config("tiny", None, ["method=cd", "steps=4", "teacher_steps=10"])


@pytest.mark.parametrize("j", [3, 7])  # the last teacher step of each segment (K = 2, N = 8)
def test_on_the_boundary_the_target_is_the_teachers_own_x(j):
    def garbage(z, t, cond, w):  # the target network is not consulted when s is the boundary
        return torch.full_like(z, 1e3)

    z_t = _z()
    t = torch.full((3,), step_plan(8).t[j], dtype=torch.float64)
    x_target, _ = consistency_target(toy_teacher, garbage, z_t, np.full(3, j), 2, 8, None, W)
    torch.testing.assert_close(x_target, toy_teacher(z_t, t.float().double(), None, W), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("j", [0, 2, 4, 6])
def test_the_target_jumps_to_the_same_boundary_point_as_the_target_network(j):
    """DDIM_{t -> t_b}(z_t, x_target) = DDIM_{s -> t_b}(z_s, f^-(z_s)) with z_s the teacher's DDIM step."""
    plan, k, n = step_plan(8), 2, 8
    target = exact_consistency(k, n)
    z_t = _z(seed=1)
    x_target, c = consistency_target(toy_teacher, target, z_t, np.full(3, j), k, n, None, W)
    t = torch.full((3,), plan.t[j], dtype=torch.float32).double()
    z_s = ddim_step(z_t, toy_teacher(z_t, t, None, W), *_coeffs(plan, j))
    b = int(segment_boundary(np.array([j]), k, n)[0])
    ab, sb = (float(v) for v in alpha_sigma(time_grid(n)[b]))
    s = torch.full((3,), plan.s[j], dtype=torch.float32).double()
    via_target = ddim_step(z_s, target(z_s, s, None, W), plan.alpha_s[j], plan.sigma_s[j], ab, sb)
    via_student = ddim_step(z_t, x_target, plan.alpha_t[j], plan.sigma_t[j], ab, sb)
    torch.testing.assert_close(via_student, via_target, rtol=1e-9, atol=1e-9)
    # the "boundary" loss is the squared distance of the two jumps at t_b
    x_hat = x_target + 0.1 * _z(seed=2)
    jump = ddim_step(z_t, x_hat, plan.alpha_t[j], plan.sigma_t[j], ab, sb)
    dist = (jump - via_target).pow(2).flatten(1).mean(1).mean()
    torch.testing.assert_close(cd_loss(x_hat, x_target, c, "boundary"), dist, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_the_exact_consistency_function_is_the_fixed_point_and_samples_like_the_teacher(k):
    n = 8
    f = exact_consistency(k, n)
    plan = step_plan(n)
    for j in range(n):
        z_t = plan.alpha_t[j] * 0.5 * _z(seed=3) + plan.sigma_t[j] * _z(seed=4)
        t = torch.full((3,), plan.t[j], dtype=torch.float32).double()
        x_target, c = consistency_target(toy_teacher, f, z_t, np.full(3, j), k, n, None, W)
        assert cd_loss(f(z_t, t, None, W), x_target, c, "x").item() < 1e-18
    z1 = _z(seed=5)  # K-step DDIM through f reproduces the teacher's N-step DDIM (up to sigma_0 at t = 0)
    torch.testing.assert_close(
        ddim_sample(f, k, None, W, Noise(z1)), ddim_sample(toy_teacher, n, None, W, Noise(z1)), atol=3e-3, rtol=0
    )


def test_fewstep_distill_cd_tiny_writes_a_ddim_student_that_samples(teacher, tmp_path, onnx_cache):
    from fewstep_cli.main import main

    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(teacher), "--method", "cd", "--steps", "2", "--preset", "tiny"]
    assert main([*argv, "--set", "teacher_steps=8", "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["iters"] == 4 and summary["sampler"] == "ddim"
    # per update of batch 4: a guided teacher pass (8 images), a target pass (4), a student pass (4)
    assert summary["evals"] == {"teacher_forward": 32, "target_forward": 16, "student_forward": 16, "backward": 16}
    assert summary["network_forward_images"] == 64 and summary["segment_steps"] == 4
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    assert_ddim_student_samples(out / "student", "cd", 2)
    from distill.export.bundle import ExportOptions, export_bundle

    m = export_bundle(out / "student", tmp_path / "bundle", ExportOptions(cache_dir=onnx_cache))
    assert m.sampler == "ddim" and sorted(m.steps) == [2] and m.guidance.network_input


def test_an_interrupted_cd_run_resumes_exactly(teacher, tmp_path):
    over = ["method=cd", "steps=2", "teacher_steps=4", "ckpt_every=1", "cd_target_ema=0.5", "ema_decay=0.5"]
    cfg = load_distill_config("tiny", None, over)
    distill(cfg, teacher, tmp_path / "a", RunOptions(progress=False))
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False, stop_at=3))
    assert (tmp_path / "b" / "checkpoint" / "target.safetensors").is_file()
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False))
    assert_resumed_exactly(tmp_path / "a", tmp_path / "b")
