"""emd (one-step distribution matching): on Gaussian data with its exact denoiser as the teacher, a
linear one-step generator trained by the module's own updates (fake score by `aux_loss` with no
anchor, generator along `dmd_direction`, z_s from `posterior_draw` at t = 1) reaches the data's
mean and variance; the run on a tiny teacher moves only the network each update is for, and the
config allows K = 1 only."""

import pytest
import torch

from distill.kit.config import ConfigError
from distill.kit.data import build_dataset
from distill.kit.diffusion import posterior_draw, schedule_at
from distill.methods.config import load_distill_config
from distill.methods.emd import EmdRun, dmd_direction, draw_renoise_times, generator_loss
from distill.methods.moment_matching import aux_loss
from tests.distill.methods.conftest import same, snapshot

MU, STD = 1.5, 0.5  # the data: N(MU, STD^2), one dimension


class GaussianDenoiser(torch.nn.Module):
    """The exact E[x | z_s] for x ~ N(m, v): m + alpha v / (alpha^2 v + sigma^2) (z_s - alpha m)."""

    def __init__(self, m: float, v: float, trainable: bool) -> None:
        super().__init__()
        self.m = torch.nn.Parameter(torch.tensor(m), requires_grad=trainable)
        self.log_v = torch.nn.Parameter(torch.tensor(v).log(), requires_grad=trainable)

    def forward(self, z: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        alpha, sigma = schedule_at(s, z)
        v = self.log_v.exp()
        return self.m + alpha * v / (alpha**2 * v + sigma**2) * (z - alpha * self.m)


def train_toy(steps: int, fake_updates: int, seed: int = 0) -> tuple[float, float]:
    """DMD on the toy: returns the generator's output mean and std after `steps` generator updates."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    teacher = GaussianDenoiser(MU, STD**2, trainable=False)
    a, b = torch.nn.Parameter(torch.tensor(1.0)), torch.nn.Parameter(torch.tensor(0.0))  # x = a z + b
    fake = GaussianDenoiser(0.0, 1.0, trainable=True)  # starts as the generator's initial law N(0, 1)
    opt_g = torch.optim.Adam([a, b], lr=0.02)
    opt_f = torch.optim.Adam(fake.parameters(), lr=0.05)
    batch = 256

    def sample(grad: bool):
        z_1 = torch.randn(batch, 1, generator=gen)
        s, t = draw_renoise_times(batch, gen)
        x = a * z_1 + b if grad else (a * z_1 + b).detach()
        z_s = posterior_draw(z_1, x, t, s, torch.randn(batch, 1, generator=gen))
        return x, z_s, s

    for _ in range(steps):
        for _ in range(fake_updates):
            x, z_s, s = sample(grad=False)
            loss = aux_loss(fake(z_s, s), x, None, anchor=0.0)
            opt_f.zero_grad()
            loss.backward()
            opt_f.step()
        x, z_s, s = sample(grad=True)
        with torch.no_grad():
            real, f = teacher(z_s, s), fake(z_s, s)
        loss = generator_loss(x, f, real)
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
    return float(b.detach()), float(a.detach().abs())


def test_a_one_step_generator_reaches_the_data_mean_and_variance():
    mean, std = train_toy(steps=500, fake_updates=5)  # DMD2's two time-scale rule; 2 needs ~4x the steps
    assert mean == pytest.approx(MU, abs=0.08)
    assert std == pytest.approx(STD, abs=0.08)


def test_the_toy_starts_far_from_the_answer():
    """The assertion above can fail: untrained, the generator is N(0, 1)."""
    mean, std = train_toy(steps=0, fake_updates=5)
    assert abs(mean - MU) > 1 and abs(std - STD) > 0.4


def test_dmd_direction_is_fake_minus_real_over_the_mean_distance_to_real():
    x = torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    fake, real = torch.tensor([[1.0, 1.0], [2.0, 2.0]]), torch.tensor([[1.0, 3.0], [1.0, 3.0]])
    d = dmd_direction(x, fake, real)
    # example 0: (0, -2) / mean(|1|, |1|) = (0, -2); example 1: (1, -1) / mean(0, 2) = (1, -1)
    torch.testing.assert_close(d, torch.tensor([[0.0, -2.0], [1.0, -1.0]]))


def test_aux_loss_without_anchor_is_plain_denoising_and_with_anchor_needs_the_teacher():
    pred, x = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 0.0]])
    assert float(aux_loss(pred, x, None, anchor=0.0)) == pytest.approx(1.0)
    assert float(aux_loss(pred, x, torch.tensor([[3.0, 3.0]]))) == pytest.approx(1.0 + 4.0)
    with pytest.raises(ValueError, match="anchor"):
        aux_loss(pred, x, None)


def test_each_update_moves_only_its_own_network_and_the_fake_score_skips_the_teacher(teacher):
    cfg = load_distill_config("tiny", None, ["method=emd", "data.resolution=16"])
    run = EmdRun(cfg, teacher, torch.device("cpu"))
    batches = iter(build_dataset(cfg.data.model_copy(update={"resolution": 16}), 4))
    student, aux = snapshot(run.student), snapshot(run.aux)
    run.aux_update(next(batches), cfg.lr)
    assert same(student, snapshot(run.student)) and not same(aux, snapshot(run.aux))
    assert run.evals["forward"] == 4 + 4  # generator and fake score: no teacher pass without an anchor
    aux = snapshot(run.aux)
    row = run.student_update(next(batches), cfg.lr)
    assert same(aux, snapshot(run.aux)) and not same(student, snapshot(run.student))
    assert row["gap_rms"] > 0 and len(row["sbin_energy"]) == cfg.s_bins


def test_the_generator_input_is_pure_noise_at_t_1(teacher):
    cfg = load_distill_config("tiny", None, ["method=emd", "data.resolution=16"])
    run = EmdRun(cfg, teacher, torch.device("cpu"))
    batch = next(iter(build_dataset(cfg.data.model_copy(update={"resolution": 16}), 64)))
    z_1, _, w, s, t = run.draw(batch)
    assert torch.all(t == 1.0) and torch.all((s >= 0) & (s < 1))
    assert abs(float(z_1.mean())) < 0.05 and float(z_1.std()) == pytest.approx(1.0, abs=0.05)
    assert torch.all((w >= cfg.guidance_min) & (w <= cfg.guidance_max))


@pytest.mark.parametrize(
    "override, message",
    [("steps=2", "steps"), ("time_sampling=grid", "time_sampling"), ("warm_start=1", "warm_start")],
)
def test_the_config_refuses_what_emd_does_not_do(override, message):
    with pytest.raises(ConfigError, match=message):
        load_distill_config("tiny", None, ["method=emd", override])
