import numpy as np
import pytest

from fewstep import schedule as S


def test_alpha_sigma_unit_norm_and_endpoints():
    t = np.linspace(0, 1, 1001)
    a, s = S.alpha_sigma(t)
    np.testing.assert_allclose(a**2 + s**2, 1.0, atol=1e-15)
    assert np.all(np.diff(S.logsnr(t)) < 0)
    np.testing.assert_allclose(S.logsnr([0.0, 1.0]), [S.LOGSNR_MAX, S.LOGSNR_MIN], atol=1e-9)
    np.testing.assert_allclose(S.t_from_logsnr(S.logsnr(t)), t, atol=1e-12)
    assert s[-1] > 0.9999997 and a[0] > 0.9999997


def _direct(t, s):
    """The posterior exactly as written in docs/moment-matching.md."""
    at, st = S.alpha_sigma(t)
    as_, ss = S.alpha_sigma(s)
    ats = at / as_
    sts2 = st**2 - ats**2 * ss**2
    return ats * ss**2 / st**2, as_ * sts2 / st**2, np.sqrt(sts2 * ss**2 / st**2)


@pytest.mark.parametrize(("t", "s"), [(1.0, 0.75), (0.6, 0.3), (0.3, 0.05), (0.9, 0.0), (0.5, 0.499)])
def test_posterior_matches_direct_formula(t, s):
    p = S.posterior(t, s)
    c_z, c_x, std = _direct(t, s)
    np.testing.assert_allclose([p.c_z, p.c_x, p.std], [c_z, c_x, std], rtol=1e-9, atol=1e-12)


def test_posterior_preserves_the_marginal():
    """z_t ~ q(z_t | x) then z_s ~ q(z_s | z_t, x) must give z_s ~ q(z_s | x) = N(alpha_s x, sigma_s^2)."""
    for t, s in [(1.0, 0.5), (0.7, 0.2), (0.2, 0.19)]:
        p = S.posterior(t, s)
        at, st = S.alpha_sigma(t)
        as_, ss = S.alpha_sigma(s)
        np.testing.assert_allclose(p.c_z * at + p.c_x, as_, rtol=1e-12)
        np.testing.assert_allclose(p.c_z**2 * st**2 + p.std**2, ss**2, rtol=1e-10)


def test_posterior_rejects_s_not_below_t():
    with pytest.raises(ValueError):
        S.posterior(0.5, 0.5)


def test_step_plan_grid():
    plan = S.step_plan(4)
    np.testing.assert_allclose(plan.t, [1.0, 0.75, 0.5, 0.25])
    np.testing.assert_allclose(plan.s, [0.75, 0.5, 0.25, 0.0])
    assert plan.steps == 4 and set(plan.to_dict()) >= {"t", "c_z", "c_x", "std"}
    with pytest.raises(ValueError):
        S.step_plan(0)


def test_conversions_round_trip():
    rng = np.random.default_rng(0)
    x, eps = rng.normal(size=(2, 3, 4, 4))
    a, s = (float(v) for v in S.alpha_sigma(0.37))
    z = a * x + s * eps
    v = S.v_from_x_eps(x, eps, a, s)
    np.testing.assert_allclose(S.x_from_v(z, v, a, s), x, atol=1e-12)
    np.testing.assert_allclose(S.eps_from_v(z, v, a, s), eps, atol=1e-12)
    np.testing.assert_allclose(S.x_from_eps(z, eps, a, s), x, atol=1e-12)
    np.testing.assert_allclose(S.eps_from_x(z, x, a, s), eps, atol=1e-12)
