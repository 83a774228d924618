"""Moment matching on a toy with a known answer: 1-D two-Gaussian data, whose E[x | z_t] is analytic."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from distill.kit.diffusion import diffuse, posterior_draw
from distill.methods.moment_matching import (
    SBinNormaliser,
    aux_loss,
    functional,
    mm_alt_student_loss,
    mm_param_student_loss,
    per_bin,
    preconditioned_direction,
    s_bin,
    sample_times,
    surrogate,
    teacher_jvp,
    teacher_loss,
    teacher_weight,
    weighted_direction,
)
from fewstep.networks import alpha_sigma_torch
from fewstep.schedule import alpha_sigma

MU, TAU = 1.0, 0.1


def data(n: int, gen: torch.Generator) -> torch.Tensor:
    sign = torch.where(torch.rand(n, 1, generator=gen) < 0.5, -1.0, 1.0)
    return sign * MU + TAU * torch.randn(n, 1, generator=gen)


class Analytic(nn.Module):
    """E[x | z_t] of the mixture 0.5 N(-mu, tau^2) + 0.5 N(mu, tau^2), with mu and tau as parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.tensor(MU))
        self.log_tau = nn.Parameter(torch.tensor(math.log(TAU)))

    def components(self, z: torch.Tensor, t: torch.Tensor):
        alpha, sigma = (a.view(-1, 1) for a in alpha_sigma_torch(t.float()))
        tau2 = torch.exp(2 * self.log_tau)
        var = alpha**2 * tau2 + sigma**2
        means = torch.stack([-self.mu, self.mu])
        logits = -((z[..., None] - alpha[..., None] * means) ** 2) / (2 * var[..., None])
        r = torch.softmax(logits, -1)
        post = means + (alpha * tau2 / var)[..., None] * (z[..., None] - alpha[..., None] * means)
        return r, post, (tau2 * sigma**2 / var)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r, post, _ = self.components(z, t)
        return (r * post).sum(-1)

    def sample_posterior(self, z: torch.Tensor, t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """An exact draw x ~ p(x | z_t): the perfect stochastic 'student'."""
        r, post, var = self.components(z, t)
        k = (torch.rand(z.shape, generator=gen) < r[..., 1]).long()
        mean = torch.gather(post, -1, k[..., None])[..., 0]
        return mean + var.sqrt() * torch.randn(z.shape, generator=gen)


class Residual(nn.Module):
    """teacher + MLP(z, t) with a zero-initialised output: starts equal to the teacher."""

    def __init__(self, teacher: Analytic) -> None:
        super().__init__()
        self.teacher = teacher
        self.mlp = nn.Sequential(nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            base = self.teacher(z, t)
        return base + self.mlp(torch.cat([z, t.float().view(-1, 1)], 1))


def test_posterior_draws_have_the_analytic_mean_and_variance():
    gen = torch.Generator().manual_seed(0)
    n, t_, s_ = 200_000, 0.7, 0.3
    z_t, x = torch.full((n, 1), 0.4), torch.full((n, 1), -0.8)
    t, s = torch.full((n,), t_), torch.full((n,), s_)
    z_s = posterior_draw(z_t, x, t, s, torch.randn(n, 1, generator=gen))
    (a_t,), (sg_t,) = (np.atleast_1d(v) for v in alpha_sigma(t_))
    (a_s,), (sg_s,) = (np.atleast_1d(v) for v in alpha_sigma(s_))
    a_ts = a_t / a_s
    s2_ts = sg_t**2 - a_ts**2 * sg_s**2
    mean = a_ts * sg_s**2 / sg_t**2 * 0.4 + a_s * s2_ts / sg_t**2 * (-0.8)
    var = s2_ts * sg_s**2 / sg_t**2
    assert abs(z_s.mean().item() - mean) < 4 * math.sqrt(var / n)
    assert abs(z_s.var().item() / var - 1) < 0.02


def test_sample_times_follow_the_k_step_rule():
    s, t = sample_times(10_000, 4, torch.Generator().manual_seed(1))
    assert (s < t).all() and (t <= 1).all() and (s >= 0).all()
    assert (t - s).max() <= 0.25 + 1e-9
    assert abs((t - s)[t < 1].mean().item() - 0.125) < 0.01


def _aux_gap(x_tilde_fn, steps: int = 300) -> float:
    """Fit an auxiliary (analytic form, free mu and tau) with the aux loss; return |mu_phi - mu_theta|."""
    gen = torch.Generator().manual_seed(2)
    teacher, aux = Analytic(), Analytic()
    opt = torch.optim.Adam(aux.parameters(), lr=1e-2, betas=(0.0, 0.99))
    for _ in range(steps):
        x = data(512, gen)
        s, t = sample_times(512, 1, gen)
        z_t = diffuse(x, t, torch.randn(x.shape, generator=gen))
        x_tilde = x_tilde_fn(teacher, z_t, t, gen)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(x.shape, generator=gen))
        with torch.no_grad():
            target = teacher(z_s, s)
        loss = aux_loss(aux(z_s, s), x_tilde, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return abs(aux.mu.item() - teacher.mu.item()) + abs(aux.log_tau.item() - teacher.log_tau.item())


def test_the_moment_matching_signal_vanishes_when_the_student_matches():
    """A student that draws exactly from p(x | z_t) has the teacher's conditional mean at every z_s:
    the auxiliary stays at the teacher (no gradient for the student) and the teacher's training
    gradient on its samples (mm-param's G) is zero. A collapsed student gets a large signal."""

    def matched(teacher, z_t, t, gen):
        with torch.no_grad():
            return teacher.sample_posterior(z_t, t, gen)

    def collapsed(teacher, z_t, t, gen):
        return torch.full_like(z_t, 0.9)

    assert _aux_gap(matched) < 0.05
    assert _aux_gap(collapsed) > 5 * _aux_gap(matched)

    gen = torch.Generator().manual_seed(3)
    teacher = Analytic()
    grads = {}
    for name, fn in (("matched", matched), ("collapsed", collapsed)):
        x = data(100_000, gen)
        s, t = sample_times(len(x), 1, gen)
        z_t = diffuse(x, t, torch.randn(x.shape, generator=gen))
        x_tilde = fn(teacher, z_t, t, gen)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(x.shape, generator=gen))
        params = dict(teacher.named_parameters())
        loss = (teacher(z_s, s) - x_tilde).pow(2).mean()
        nu = preconditioned_direction(loss, params, {k: torch.ones_like(v) for k, v in params.items()})
        grads[name] = math.sqrt(sum(float(v.pow(2).sum()) for v in nu.values()))
    assert grads["matched"] < 0.2 * grads["collapsed"], grads


def test_jvp_matches_finite_differences_of_the_teacher():
    torch.manual_seed(0)
    teacher = Analytic().double()
    z, t = torch.randn(16, 1, dtype=torch.float64), torch.rand(16, dtype=torch.float64)
    params = dict(teacher.named_parameters())
    direction = {k: torch.randn_like(v) for k, v in params.items()}
    fn = functional(teacher, z, t)
    out, tangent = teacher_jvp(fn, params, direction)
    h = 1e-3  # the analytic teacher computes in float32 inside (0-dim float64 parameters do not promote)
    plus = fn({k: v.detach() + h * direction[k] for k, v in params.items()})
    minus = fn({k: v.detach() - h * direction[k] for k, v in params.items()})
    torch.testing.assert_close(tangent, (plus - minus) / (2 * h), rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(out, teacher(z, t))


def _w1(samples: torch.Tensor, gen: torch.Generator) -> float:
    ref = torch.sort(data(len(samples), gen)[:, 0]).values
    return float((torch.sort(samples[:, 0]).values - ref).abs().mean())


def _one_step_samples(student, gen, n=4000) -> torch.Tensor:
    with torch.no_grad():
        return student(torch.randn(n, 1, generator=gen), torch.ones(n))


def test_the_surrogate_gradient_is_the_weighted_direction():
    """d(loss)/d(x_tilde) is d scaled by the weighting: per example to unit RMS ("rms"), by one
    minibatch scalar that keeps the examples' relative sizes ("batch"), or not at all ("none")."""
    d = torch.stack([torch.full((2, 3), 0.01), torch.full((2, 3), 2.0)])
    grads = {}
    for weighting in ("rms", "batch", "none"):
        x = torch.zeros_like(d, requires_grad=True)
        surrogate(x, d, weighting).backward()
        grads[weighting] = x.grad * d.shape[0] * d[0].numel()  # undo the mean over examples and elements
    torch.testing.assert_close(grads["none"], d)
    torch.testing.assert_close(grads["rms"], torch.ones_like(d), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads["batch"].pow(2).mean(), torch.tensor(1.0))
    torch.testing.assert_close(grads["batch"][1] / grads["batch"][0], torch.full((2, 3), 200.0))
    with pytest.raises(ValueError, match="weighting"):
        surrogate(d, d, "per-pixel")


@pytest.mark.parametrize("weighting", ["rms", "batch"])
def test_mm_alt_moves_a_one_step_student_toward_the_data(weighting):
    gen = torch.Generator().manual_seed(4)
    teacher = Analytic().requires_grad_(False)
    student, aux = Residual(teacher), Residual(teacher)
    before = _w1(_one_step_samples(student, gen), gen)  # the teacher in one step: E[x] = 0, far from +-1
    opt_s = torch.optim.Adam(student.mlp.parameters(), lr=3e-3, betas=(0.0, 0.99))
    opt_a = torch.optim.Adam(aux.mlp.parameters(), lr=3e-3, betas=(0.0, 0.99))
    for n in range(600):
        x = data(256, gen)
        s, t = sample_times(256, 1, gen)
        z_t = diffuse(x, t, torch.randn(x.shape, generator=gen))
        x_tilde = student(z_t, t)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(x.shape, generator=gen))
        target = teacher(z_s, s)
        if n % 2 == 0:
            loss = aux_loss(aux(z_s, s), x_tilde, target)
            opt_a.zero_grad()
            loss.backward()
            opt_a.step()
        else:
            with torch.no_grad():
                fake = aux(z_s, s)
            loss = mm_alt_student_loss(x_tilde, fake, target, weighting)
            opt_s.zero_grad()
            loss.backward()
            opt_s.step()
    after = _w1(_one_step_samples(student, gen), gen)
    assert after < 0.5 * before, (before, after)


def test_mm_param_moves_a_one_step_student_toward_the_data():
    gen = torch.Generator().manual_seed(5)
    # The teacher as a network: the analytic denoiser plus a zero-output MLP, so that its parameter
    # tangent space (the last layer's features) is rich enough to express the auxiliary's step.
    teacher = Residual(Analytic().requires_grad_(False))
    student = Residual(Analytic().requires_grad_(False))
    before = _w1(_one_step_samples(student, gen), gen)
    opt = torch.optim.Adam(student.mlp.parameters(), lr=1e-3, betas=(0.0, 0.99))
    params = dict(teacher.mlp.named_parameters(prefix="mlp"))
    ones = {k: torch.ones_like(v) for k, v in params.items()}
    for _ in range(200):
        xa = data(256, gen)
        s, t = sample_times(256, 1, gen)
        z_t = diffuse(xa, t, torch.randn(xa.shape, generator=gen))
        with torch.no_grad():
            x_tilde = student(z_t, t)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(xa.shape, generator=gen))
        nu = preconditioned_direction((teacher(z_s, s) - x_tilde).pow(2).mean(), params, ones)
        xb = data(256, gen)
        s, t = sample_times(256, 1, gen)
        z_t = diffuse(xb, t, torch.randn(xb.shape, generator=gen))
        x_tilde = student(z_t, t)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(xb.shape, generator=gen))
        _, direction = teacher_jvp(functional(teacher, z_s, s), params, nu)
        loss = mm_param_student_loss(x_tilde, direction)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _w1(_one_step_samples(student, gen), gen)
    # Weaker than mm-alt here (its auxiliary is one linearised step, W1 plateaus near 0.55 from 1.0
    # on this toy), but it must move the student the right way.
    assert after < 0.7 * before, (before, after)


# --- time sampling and the per-noise-level weightings (issue 14) ------------------------------


def test_grid_time_sampling_trains_on_the_samplers_own_grid():
    k = 4
    s, t = sample_times(20_000, k, torch.Generator().manual_seed(6), mode="grid")
    assert set(torch.unique(t).tolist()) == {0.25, 0.5, 0.75, 1.0}
    assert (s < t).all() and (s >= t - 1 / k - 1e-12).all() and (s >= 0).all()
    # s uniform within the step: its mean sits mid-step
    assert abs((t - s).mean().item() - 1 / (2 * k)) < 0.003
    with pytest.raises(ValueError, match="time_sampling"):
        sample_times(4, k, torch.Generator(), mode="log")


def test_teacher_weight_is_one_over_sigma_squared_capped():
    s = torch.tensor([0.0, 0.3, 0.7, 1.0], dtype=torch.float64)
    _, sigma = alpha_sigma(s.numpy())
    exact = 1.0 / sigma**2  # 1 + SNR
    w = teacher_weight(s, cap=1e9)
    np.testing.assert_allclose(w.numpy(), exact, rtol=1e-9)
    capped = teacher_weight(s, cap=10.0).numpy()
    np.testing.assert_allclose(capped, np.minimum(exact, 10.0), rtol=1e-9)
    assert capped[0] == 10.0 and abs(capped[-1] - 1.0) < 1e-6


def test_teacher_loss_is_the_v_mse_of_a_v_trained_teacher():
    """x-space error weighted by 1 + SNR equals the v-space error |v - v_hat|^2 (uncapped range)."""
    gen = torch.Generator().manual_seed(7)
    s = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    x, eps, x_hat = (torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    a, sg = (torch.as_tensor(v).view(-1, 1, 1, 1) for v in alpha_sigma(s.numpy()))
    z = a * x + sg * eps
    v_true = a * eps - sg * x
    v_hat = (a * z - x_hat) / sg  # the v whose x-prediction is x_hat (x = alpha z - sigma v)
    expected = (v_true - v_hat).pow(2).flatten(1).mean(1).mean()
    torch.testing.assert_close(teacher_loss(x_hat, x, s, cap=1e9), expected)


def test_aux_loss_weights_each_example():
    pred = torch.zeros(2, 1, 2, 2)
    x_tilde = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 2.0)])
    teacher = torch.zeros_like(pred)
    assert aux_loss(pred, x_tilde, teacher).item() == pytest.approx((1 + 4) / 2)
    assert aux_loss(pred, x_tilde, teacher, torch.tensor([3.0, 0.5])).item() == pytest.approx((3 * 1 + 0.5 * 4) / 2)


def test_sbin_normaliser_gives_every_noise_level_a_unit_direction():
    """Two bins whose directions differ 200x in size both come out with unit mean square; the state
    round-trips exactly and a second minibatch moves the running value by (1 - decay)."""
    norm = SBinNormaliser(bins=2, decay=0.9)
    s = torch.tensor([0.1, 0.2, 0.8, 0.9], dtype=torch.float64)
    d = torch.stack([torch.full((3,), 0.01), torch.full((3,), 0.03), torch.full((3,), 2.0), torch.full((3,), 6.0)])
    out = weighted_direction(d, "sbin", s, normaliser=norm)
    low, high = out[:2].pow(2).mean(), out[2:].pow(2).mean()
    torch.testing.assert_close(low, torch.tensor(1.0))
    torch.testing.assert_close(high, torch.tensor(1.0))
    torch.testing.assert_close(out[1] / out[0], torch.full((3,), 3.0))  # relative sizes within a bin kept
    np.testing.assert_allclose(norm.values(), [(0.01**2 + 0.03**2) / 2, (4 + 36) / 2], rtol=1e-6)
    other = SBinNormaliser(bins=2, decay=0.9)
    other.load_state(norm.state())
    assert other.values() == norm.values()
    norm(torch.full((1, 3), 1.0), torch.tensor([0.3]))  # bin 0 sees mean square 1
    expected = (0.9 * 0.1 * 0.0005 + 0.1 * 1.0) / (0.9 * 0.1 + 0.1)
    assert norm.values()[0] == pytest.approx(expected) and norm.values()[1] == other.values()[1]
    with pytest.raises(ValueError, match="s"):
        weighted_direction(d, "sbin")


def test_snr_cap_weighting_lifts_the_low_noise_examples():
    s = torch.tensor([0.05, 0.95], dtype=torch.float64)
    d = torch.ones(2, 4)
    out = weighted_direction(d, "snr-cap", s, snr_cap=5.0)
    w = teacher_weight(s, 5.0)
    assert w[0] == 5.0 and w[1] < 1.01
    torch.testing.assert_close(out[0] / out[1], (w[0] / w[1]).float().expand(4))
    torch.testing.assert_close(out.pow(2).mean(), torch.tensor(1.0))  # one minibatch scale, as "batch"


def test_per_bin_sums_and_counts():
    s = torch.tensor([0.05, 0.15, 0.12, 0.99], dtype=torch.float64)
    sums, counts = per_bin(torch.tensor([1.0, 2.0, 3.0, 4.0]), s, bins=10)
    assert counts == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1] and sums[1] == 5.0 and sums[9] == 4.0
    assert s_bin(torch.tensor([0.0, 1.0], dtype=torch.float64), 10).tolist() == [0, 9]
