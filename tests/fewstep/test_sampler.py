import numpy as np
import pytest
import torch

from fewstep import schedule as S
from fewstep.rng import SeededNoise
from fewstep.sampler import ancestral_sample, ddim_sample, guidance_combine

SHAPE = (3, 4, 4)


def linear_denoiser(z, t, cond, w):
    """A fixed, t-dependent denoiser written with operators only (numpy or torch)."""
    tt = t.reshape(-1, 1, 1, 1)
    return 0.7 * z * (1 - 0.5 * tt) + 0.1 * cond


def cfg_denoiser(z, t, cond, w):
    x_c = linear_denoiser(z, t, cond, w)
    x_u = linear_denoiser(z, t, cond * 0, w)
    return guidance_combine(x_c, x_u, w)


@pytest.mark.parametrize("sampler", [ancestral_sample, ddim_sample])
def test_seed_gives_same_image_alone_and_in_batch(sampler):
    cond = np.ones((4, *SHAPE), np.float32)
    batch = sampler(linear_denoiser, 4, cond, 2.0, SeededNoise([11, 12, 13, 14], SHAPE))
    alone = sampler(linear_denoiser, 4, cond[:1], 2.0, SeededNoise([13], SHAPE))
    np.testing.assert_array_equal(batch[2], alone[0])
    assert not np.array_equal(batch[0], batch[1])


def test_guidance_one_equals_conditional():
    cond = np.full((2, *SHAPE), 0.5, np.float32)
    guided = ancestral_sample(cfg_denoiser, 3, cond, 1.0, SeededNoise([1, 2], SHAPE))
    plain = ancestral_sample(linear_denoiser, 3, cond, 1.0, SeededNoise([1, 2], SHAPE))
    np.testing.assert_array_equal(guided, plain)
    stronger = ancestral_sample(cfg_denoiser, 3, cond, 3.0, SeededNoise([1, 2], SHAPE))
    assert np.abs(stronger - plain).max() > 1e-3


@pytest.mark.parametrize("sampler", [ancestral_sample, ddim_sample])
def test_numpy_and_torch_paths_agree(sampler):
    cond = np.linspace(-1, 1, 2 * 48, dtype=np.float32).reshape(2, *SHAPE)
    out_np = sampler(cfg_denoiser, 5, cond, 2.5, SeededNoise([3, 4], SHAPE))
    like = torch.zeros(1, dtype=torch.float32)
    out_t = sampler(cfg_denoiser, 5, torch.from_numpy(cond), 2.5, SeededNoise([3, 4], SHAPE), like)
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy(), out_np, atol=1e-5)


def test_point_mass_data_is_recovered_exactly():
    x0 = np.full((1, *SHAPE), 0.3, np.float32)
    for sampler in (ancestral_sample, ddim_sample):
        out = sampler(lambda z, t, c, w: x0 + 0 * z, 6, None, 1.0, SeededNoise([0], SHAPE))
        np.testing.assert_allclose(out, x0)


@pytest.mark.parametrize("sampler", [ancestral_sample, ddim_sample])
def test_gaussian_data_marginal_is_reproduced(sampler):
    """For x ~ N(0, s^2) the exact denoiser is E[x | z_t] = alpha s^2 / (alpha^2 s^2 + sigma^2) z.

    Sampling with it must produce the last-step prediction's exact spread: with many steps the
    final z approaches the data, so the sample variance must approach s^2 (up to the last
    step's shrinkage).
    """
    s2 = 0.25

    def exact(z, t, cond, w):
        a, sg = S.alpha_sigma(np.asarray(t, np.float64))
        k = (a * s2 / (a**2 * s2 + sg**2)).astype(np.float32).reshape(-1, 1, 1, 1)
        return k * z

    shape = (1, 8, 8)
    out = sampler(exact, 200, None, 1.0, SeededNoise(range(64), shape))
    var = float(out.var())
    # last x_hat = E[x | z_{1/200}]: variance s2 * alpha^2 s2 / (alpha^2 s2 + sigma^2) at t = 1/200
    a, sg = S.alpha_sigma(1 / 200)
    expected = s2 * (a**2 * s2) / (a**2 * s2 + sg**2)
    assert abs(var - expected) < 0.06 * expected, (var, expected)


# --- the one per-step update ------------------------------------------------------------------


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_per_image_coefficients_give_the_bytes_of_the_shared_step(sampler):
    """Step-level batching (each image at its own step, per-image coefficients) and the sampler
    loop (one step for the batch, Python floats) round the float64 plan alike: same bytes."""
    from fewstep.sampler import StepCoefficients, step_update, uses_noise

    rng = np.random.default_rng(0)
    plans = [S.step_plan(8), S.step_plan(4), S.step_plan(8)]
    steps = [5, 1, 0]
    z = rng.standard_normal((3, *SHAPE)).astype(np.float32)
    x = rng.standard_normal((3, *SHAPE)).astype(np.float32)
    eps = rng.standard_normal((3, *SHAPE)).astype(np.float32) if uses_noise(sampler) else None
    batched = step_update(sampler, z, x, StepCoefficients.per_image(plans, steps), eps)
    for b, (plan, i) in enumerate(zip(plans, steps, strict=True)):
        one = step_update(
            sampler,
            z[b : b + 1],
            x[b : b + 1],
            StepCoefficients.at(plan, i),
            eps[b : b + 1] if eps is not None else None,
        )
        assert batched[b].tobytes() == one[0].tobytes()
    as_torch = step_update(
        sampler,
        torch.from_numpy(z),
        torch.from_numpy(x),
        StepCoefficients.at(plans[0], steps[0]),
        None if eps is None else torch.from_numpy(eps),
    )
    ref = step_update(sampler, z, x, StepCoefficients.at(plans[0], steps[0]), eps)
    np.testing.assert_allclose(as_torch.numpy(), ref, atol=1e-6)


def test_the_update_refuses_what_it_cannot_do():
    from fewstep.sampler import StepCoefficients, step_update, uses_noise

    c = StepCoefficients.at(S.step_plan(2), 0)
    z = np.zeros((1, *SHAPE), np.float32)
    assert uses_noise("ancestral") and not uses_noise("ddim")
    with pytest.raises(ValueError, match="needs the step's noise"):
        step_update("ancestral", z, z, c)
    with pytest.raises(ValueError, match="no per-step update"):
        step_update("euler", z, z, c)
    with pytest.raises(ValueError, match="unknown sampler"):
        uses_noise("euler")
