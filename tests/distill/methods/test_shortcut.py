"""Shortcut models (Frans et al. 2024): the self-consistency target, its fixed point on Gaussian data
(where the teacher's DDIM map is known exactly), the warm start, the config, and a tiny end-to-end
run through `fewstep distill` that resumes exactly and exports one bundle for every K."""

import json

import numpy as np
import pytest
import torch

from distill.kit.checkpoint import load_denoiser
from distill.kit.config import ConfigError
from distill.methods.config import load_distill_config
from distill.methods.progressive import pd_loss, two_step_target
from distill.methods.registry import distill
from distill.methods.runloop import RunOptions
from distill.methods.shortcut import Grid, draw_levels, shortcut_target, step_counts
from fewstep.sampler import ddim_sample
from fewstep.schedule import alpha_sigma
from tests.distill.methods.conftest import assert_resumed_exactly
from tests.distill.methods.test_progressive import Noise, toy_teacher

VAR = 0.3  # toy data: x ~ N(0, VAR) per pixel


def gaussian_teacher(z, t, cond, w):
    """The exact x-prediction E[x | z_t] of x ~ N(0, VAR): alpha VAR / (alpha^2 VAR + sigma^2) z_t."""
    alpha, sigma = alpha_sigma(t.double().numpy())
    gain = torch.as_tensor(alpha * VAR / (alpha**2 * VAR + sigma**2)).view(-1, 1, 1, 1)
    return gain.to(z.dtype) * z


def test_step_counts_are_the_powers_of_two_up_to_the_finest():
    assert step_counts(8) == [1, 2, 4, 8] and step_counts(1) == [1]
    with pytest.raises(ConfigError, match="power of two"):
        step_counts(6)


def test_levels_are_drawn_from_the_supported_counts_with_the_base_share():
    gen = torch.Generator().manual_seed(0)
    k = draw_levels(gen, 4000, 8, 0.5)
    assert set(np.unique(k)) == {1, 2, 4, 8}
    assert abs((k == 8).mean() - 0.5) < 0.03 and abs((k == 1).mean() - 0.5 / 3) < 0.03
    k = draw_levels(gen, 4000, 4, None)  # None: every level alike
    assert all(abs((k == n).mean() - 1 / 3) < 0.03 for n in (1, 2, 4))


@pytest.mark.parametrize("n", [1, 2, 4])
def test_the_target_is_progressive_distillations_two_step_target_when_every_example_has_one_k(n):
    z = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    w = torch.tensor([1.0, 2.5, 4.0], dtype=torch.float64)
    i = np.array([0, n - 1, n // 2])
    seen = []

    def student(z, t, cond, w, d):  # ignores d beyond recording it
        seen.append(d)
        return toy_teacher(z, t, cond, w)

    got = shortcut_target(student, z, np.full(3, n), Grid.at(np.full(3, n), i), None, w)
    want = two_step_target(toy_teacher, z, i, n, None, w)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    assert all(torch.equal(d, torch.full((3,), 0.5 / n)) for d in seen) and len(seen) == 2


def test_per_example_levels_give_each_example_its_own_grid():
    z = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w = torch.tensor([2.0, 3.0], dtype=torch.float64)
    k, i = np.array([1, 4]), np.array([0, 2])

    def student(z, t, cond, w, d):
        return toy_teacher(z, t, cond, w)

    got = shortcut_target(student, z, k, Grid.at(k, i), None, w)
    for b in range(2):
        want = two_step_target(toy_teacher, z[b : b + 1], i[b : b + 1], int(k[b]), None, w[b : b + 1])
        torch.testing.assert_close(got[b : b + 1], want, rtol=1e-10, atol=1e-10)


class LinearShortcut(torch.nn.Module):
    """x_hat = a[K, i] z_t: one gain per level and grid index (the exact family on Gaussian data)."""

    def __init__(self, finest):
        super().__init__()
        self.finest = finest
        self.gain = torch.nn.Parameter(torch.zeros(len(step_counts(finest)), finest, dtype=torch.float64))

    def __call__(self, z, t, cond, w, d):
        k = torch.round(1.0 / d.double()).long()
        level = torch.log2(k.double()).round().long()
        i = torch.round((1.0 - t.double()) * k).long().clamp(max=self.finest - 1)
        return self.gain[level, i].view(-1, 1, 1, 1) * z


def test_at_its_fixed_point_every_k_of_a_shortcut_student_samples_like_the_teachers_finest_ddim():
    """Gaussian data: the teacher's x prediction, each DDIM step and so the K-step DDIM map are
    linear in z, and one gain per (K, i) is exact. Training the gains with the shortcut loss (the base
    level on the teacher, coarser levels on the network's own two half steps) must reach the point
    where the 1-, 2- and 4-step samplers give the teacher's 8-step DDIM sample."""
    finest, batch = 8, 64
    net = LinearShortcut(finest)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 800)
    gen = torch.Generator().manual_seed(0)
    for _ in range(800):
        k = draw_levels(gen, batch, finest, None)
        i = np.minimum((torch.rand(batch, generator=gen).numpy() * k).astype(int), k - 1)
        grid = Grid.at(k, i)
        alpha, sigma = (torch.as_tensor(v).view(-1, 1, 1, 1) for v in (grid.alpha_t, grid.sigma_t))
        z_t = alpha * VAR**0.5 * torch.randn(batch, 1, 2, 2, generator=gen, dtype=torch.float64)
        z_t = z_t + sigma * torch.randn(batch, 1, 2, 2, generator=gen, dtype=torch.float64)
        t = torch.as_tensor(grid.t)
        with torch.no_grad():
            target = gaussian_teacher(z_t, t, None, None)  # the base level's; coarser levels' replaced:
            c = np.flatnonzero(k != finest)
            sub = Grid(*(getattr(grid, f)[c] for f in Grid.__dataclass_fields__))
            target[c] = shortcut_target(net, z_t[c], k[c], sub, None, None)
        loss = pd_loss(net(z_t, t, None, None, torch.as_tensor(1.0 / k)), target, grid.t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    z1 = torch.randn(4, 1, 2, 2, generator=gen, dtype=torch.float64)
    exact = ddim_sample(gaussian_teacher, finest, None, None, Noise(z1))
    assert exact.abs().mean() > 0.05  # not a trivial map
    for k in (1, 2, 4, 8):

        def denoise(z, t, cond, w, k=k):
            return net(z, t, cond, w, torch.full((z.shape[0],), 1.0 / k, dtype=torch.float64))

        with torch.no_grad():
            got = ddim_sample(denoise, k, None, None, Noise(z1))
        torch.testing.assert_close(got, exact, rtol=0, atol=2e-3 * float(exact.abs().max()))
    # before training (gain 0) the 1-step sample is far from it: the test can fail
    assert float(exact.abs().max()) > 0.1


def test_the_warm_start_is_the_teacher_at_every_step_size(teacher):
    from distill.methods.student import make_student

    t_net = load_denoiser(teacher)[0]
    student = make_student(t_net, seed=3, step_size_input=True)
    assert student.cfg.step_size_input and student.cfg.guidance_input
    res = t_net.cfg.resolution
    z, t = torch.randn(2, 3, res, res), torch.tensor([1.0, 0.4])
    states, mask = torch.randn(2, 16, 32), torch.ones(2, 16, dtype=torch.bool)
    with torch.no_grad():
        want = t_net(z, t, states, mask)
        for d in (1.0, 0.5, 0.125):
            got = student(z, t, states, mask, torch.full((2,), 2.5), torch.full((2,), d))
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        with pytest.raises(ValueError, match="step size"):
            student(z, t, states, mask, torch.full((2,), 2.5))


def test_the_config_names_the_bad_key():
    with pytest.raises(ValueError, match="power of two"):
        load_distill_config("tiny", None, ["method=shortcut", "steps=6"])
    with pytest.raises(ValueError, match="base_fraction"):
        load_distill_config("tiny", None, ["method=shortcut", "base_fraction=1.5"])
    with pytest.raises(ConfigError, match="adv_weight is set but shortcut has no such setting"):
        load_distill_config("tiny", None, ["method=shortcut", "adv_weight=0.5"])
    cfg = load_distill_config("tiny", None, ["method=shortcut", "steps=4"])
    assert cfg.steps == 4 and cfg.base_fraction is None


@pytest.fixture(scope="module")
def run_dir(teacher, tmp_path_factory):
    """A tiny shortcut run (finest K = 4) through `fewstep distill`."""
    from fewstep_cli.main import main

    out = tmp_path_factory.mktemp("shortcut") / "run"
    argv = ["distill", "--teacher", str(teacher), "--method", "shortcut", "--steps", "4", "--preset", "tiny"]
    assert main([*argv, "--set", "base_fraction=0.5", "--out", str(out), "--no-progress"]) == 0
    return out


def test_fewstep_distill_shortcut_tiny_writes_one_student_for_every_k(run_dir):
    from distill.kit.guidance import GuidedDenoiser
    from fewstep.provenance import provenance
    from fewstep.rng import SeededNoise

    out = run_dir
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["iters"] == 4 and summary["sampler"] == "ddim"
    assert summary["steps_supported"] == [1, 2, 4]
    assert (summary["git_sha"], summary["dirty"]) == tuple(provenance().values())  # the code that trained it
    ev = summary["evals"]
    # each of the 16 examples is either a base example (a guided teacher pass: 2 images) or a
    # coarser one (two target passes of the student: 2 images); one student pass and backward each
    assert ev["student_forward"] == ev["backward"] == 16
    assert ev["teacher_forward"] + ev["target_forward"] == 32 and ev["teacher_forward"] > 0 < ev["target_forward"]
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 and len(r["x_rms_by_k"]) == 3 for r in rows)
    student, scfg = load_denoiser(out / "student")
    assert scfg.model.step_size_input and scfg.model.guidance_input
    cond = type("C", (), {})()
    cond.states, cond.mask = torch.randn(2, 16, 32), torch.ones(2, 16, dtype=torch.bool)
    samples = {}
    for k in (1, 2, 4):
        with torch.no_grad():
            samples[k] = ddim_sample(GuidedDenoiser(student, k), k, cond, 3.0, SeededNoise([1, 2], (3, 16, 16)),
                                     torch.zeros(1))  # fmt: skip
        assert samples[k].shape == (2, 3, 16, 16) and torch.isfinite(samples[k]).all()
    assert not torch.equal(samples[1], samples[4])
    with pytest.raises(ValueError, match="steps=K"):
        GuidedDenoiser(student)


def test_one_bundle_serves_every_k_with_d_fed_per_row(run_dir, tmp_path, onnx_cache):
    """The export lists K = 1, 2, 4 and declares the input d; the service runs any of them (ONNX
    Runtime, the torch backend and OpenVINO where installed agree), feeds d = 1/K (the graph's
    output depends on it), and step-level batching mixes step counts in one evaluation with the
    images a request alone gets."""
    from distill.export.bundle import ExportOptions, export_bundle
    from fewstep.bundle import STEP_SIZE_INPUT
    from service.backends.base import BackendSettings
    from service.engine.step_scheduler import StepBatch
    from service.errors import InvalidArgument
    from service.loader import denoiser_inputs, load_pipeline
    from service.pipeline import ImageJob

    m = export_bundle(run_dir / "student", tmp_path / "bundle", ExportOptions(cache_dir=onnx_cache))
    assert sorted(m.steps) == [1, 2, 4] and m.default_steps == 4 and m.sampler == "ddim"
    assert m.takes_step_size and [i.name for i in m.graphs["denoiser"].inputs][-1] == STEP_SIZE_INPUT
    ort = load_pipeline(tmp_path / "bundle", BackendSettings(), warmup=())
    pt = load_pipeline(tmp_path / "bundle", BackendSettings(kind="torch", precision="fp32"), warmup=())
    jobs = {k: [ImageJob("a red circle", 1, k, 3.0), ImageJob("a blue square", 2, k, 2.0)] for k in (1, 2, 4)}
    others = [pt]
    try:
        import openvino  # noqa: F401 - the OpenVINO backend, where installed

        others.append(load_pipeline(tmp_path / "bundle", BackendSettings(kind="openvino", precision="fp32"), warmup=()))
    except ImportError:
        pass
    for k, js in jobs.items():
        for other in others:
            np.testing.assert_allclose(ort.sample(js, k), other.sample(js, k), atol=1e-3)
    with pytest.raises(InvalidArgument, match="steps"):
        ort.check(ImageJob("a red circle", 1, 3, 3.0))
    z, t, s, mask, w, d = denoiser_inputs(m, 2, seed=0)
    fine, coarse = (
        ort.denoiser(z, t, s, mask, w, np.full(2, 0.25, np.float32)),
        ort.denoiser(z, t, s, mask, w, d * 0 + 1),
    )
    assert not np.array_equal(fine, coarse)
    with pytest.raises(ValueError, match="step size d"):
        ort.denoiser(z, t, s, mask, w)
    batch = StepBatch(ort)
    mixed = [jobs[1][0], jobs[4][1], jobs[2][0]]
    for n, job in enumerate(mixed):
        batch.admit(n, [job])
    out = {}
    while len(batch):
        out |= {im.owner: im.image for im in batch.iterate().finished}
    for n, job in enumerate(mixed):
        np.testing.assert_array_equal(out[n], ort.generate([job])[0])


def test_an_interrupted_shortcut_run_resumes_exactly(teacher, tmp_path):
    cfg = load_distill_config("tiny", None, ["method=shortcut", "steps=4", "ckpt_every=1", "ema_decay=0.5"])
    distill(cfg, teacher, tmp_path / "a", RunOptions(progress=False))
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False, stop_at=2))
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False))
    for packed in ("student", "student-raw"):
        a = assert_resumed_exactly(tmp_path / "a", tmp_path / "b", packed)
    t0 = load_denoiser(teacher)[0].state_dict()
    assert any(not torch.equal(a[k], t0[k]) for k in t0)  # it trained
